"""Decode and score: CPU decode tasks feeding an actor pool that holds the model.

Both stages run the library's code: :func:`fiqa_core.images.prepare_image` to decode, and
:meth:`~fiqa_core.scoring.ScorerBase.score_prepared` to score, on the torch engine
(:class:`fiqa_core.Scorer`) or the onnx one (:class:`fiqa_core.OnnxScorer`).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa

from fiqa_core import storage
from fiqa_core.batch_decode import DEFERRED, device_eligible
from fiqa_core.images import DEFAULT_MAX_PIXELS, Decoded, prepare_image, stack_decoded
from fiqa_core.lake import load_images
from fiqa_core.scoring import resolve_engine

from .config import ScoreConfig
from .schema import OUTPUT_SCHEMA, arrow

FAULT_MARKER = "_fault_injected"  # written by an injected actor death, removed on success
ACTOR_BATCH = 64  # rows handed to a scoring actor at once; it runs them in forward batches


def score_stages(to_score, cfg: ScoreConfig, size: int, use_gpu: bool, run_stamp: str,
                 die_after: int | None = None, model_id: str | None = None):
    """CPU decode tasks, then the scoring actor pool (:func:`default_scorers` actors)."""
    import ray

    # JPEGs decoded in batches on the actors' device (nvJPEG on a GPU), the rest in tasks
    # (a torch engine, non-draft setting: with draft or the onnx engine, every image
    # decodes in the tasks)
    engine = resolve_engine(cfg.engine, cfg.model)
    defer_jpeg = ((use_gpu if cfg.device_decode is None else cfg.device_decode)
                  and not cfg.draft and engine == "torch")
    decoded = to_score.map_batches(
        decode_batch,
        fn_kwargs={
            "size": size,
            "draft": cfg.draft,
            "max_pixels": cfg.max_pixels,
            "threads": cfg.read_threads,
            "defer_jpeg": defer_jpeg,
        },
        batch_size=cfg.decode_batch_size,
        batch_format="pandas",
        num_cpus=1,  # and one decode at a time (decode_batch), so the scorers keep their CPUs
        # A decode task reserves the memory it holds: full-size decodes in flight on its read
        # threads and its batch of crops. Resources that differ from the scoring actors' also
        # keep Ray from fusing decoding into them, where it would run one batch at a time
        # instead of on every CPU.
        memory=decode_task_memory(cfg, size),
    )
    return decoded.map_batches(
        ScoreActor,
        fn_constructor_kwargs={
            "checkpoint": cfg.model,
            "engine": engine,
            "model_id": model_id,
            "device": "cuda" if use_gpu else "cpu",
            "batch_size": cfg.batch_size,
            "threads": cfg.scorer_threads or max(1, math.ceil(cfg.scorer_cpus)),
            "precision": cfg.precision,
            "max_pixels": cfg.max_pixels,
            "compile": cfg.compile,
            "scored_at": run_stamp,
            "die_after": die_after,
            "fault_marker": storage.join(cfg.output, FAULT_MARKER),
        },
        batch_size=max(ACTOR_BATCH, cfg.batch_size or 0),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.scorers or default_scorers(use_gpu)),
        num_gpus=1 if use_gpu else 0,
        num_cpus=cfg.scorer_cpus,
    )


def default_scorers(use_gpu: bool) -> int:
    """One actor per GPU; on CPUs, one single-threaded actor per core for 3/4 of the cores.

    Measured end to end on the 2-core machine (student, 352 px, bf16, 3,000 JPEGs): two
    single-threaded actors 79.8-82.2 images/s, one actor on two threads 75.0. A forward
    pass spread over threads stalls whenever a decode task takes one of its cores; a
    single-threaded actor only slows down. Decoding needs about a third of a core per
    model core, which the other quarter of the cores (and the actors' idle time) covers.
    """
    import ray

    from jobs.ray_env import cluster_cores

    if use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 0)))
    return max(1, int(0.75 * cluster_cores() + 0.5))


def decode_task_memory(cfg: ScoreConfig, size: int) -> int:
    """Bytes a decode task reserves: ``decode_task_mb``, or an estimate: the worker process
    itself (pandas, pyarrow, PIL: ~300 MiB measured), one 4 MP photo decoding (RGB), the
    batch's encoded bytes (2 MB each, all may be read ahead) and its S x S crops."""
    if cfg.decode_task_mb:
        return cfg.decode_task_mb * 2**20
    process = 300 * 2**20
    return process + 4_000_000 * 3 + cfg.decode_batch_size * (2_000_000 + size * size * 3)


def decode_batch(
    batch: pd.DataFrame, size: int, draft: bool, max_pixels: int, threads: int,
    defer_jpeg: bool = False,
) -> dict:
    """Read (retrying) + decode + resize + centre-crop each image; one status per row.

    With ``defer_jpeg``, JPEGs the scoring actors decode in batches on their device
    (:func:`fiqa_core.batch_decode.device_eligible`) pass through as bytes (``encoded``,
    status ``deferred``); every other file is decoded here as always.
    """
    encoded: dict[int, bytes] = {}

    def decode(data: bytes) -> Decoded:
        if defer_jpeg and device_eligible(data, max_pixels):
            result = Decoded(DEFERRED)
            encoded[id(result)] = data
            return result
        return prepare_image(data, size, max_pixels=max_pixels, draft=draft)

    results = load_images(list(batch["path"]), decode, threads, decode_slots=1)
    extra = {"encoded": np.array([encoded.get(id(r), b"") for r in results], dtype=object)}
    return {
        "path": batch["path"].to_numpy(dtype=object),
        "size": batch["size"].to_numpy(dtype=object),
        "mtime": batch["mtime"].to_numpy(dtype=object),
        # "" stands for no etag inside the pipeline: an all-None object column makes Ray
        # fall back to pickling; ScoreActor turns it back into null
        "etag": batch["etag"].fillna("").astype(str).to_numpy(),
        "bucket": batch["bucket"].to_numpy(dtype=np.int64),
        **stack_decoded(results, size),
        **(extra if defer_jpeg else {}),
    }


class ScoreActor:
    """Scoring stage: loads the model once per actor (on its engine), scores prepared pixels."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        batch_size: int | None,
        scored_at: str,
        threads: int = 1,
        precision: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        compile: bool = False,
        die_after: int | None = None,
        fault_marker: str | None = None,
        engine: str = "torch",
        model_id: str | None = None,
    ):
        import time

        from fiqa_core.scoring import load_scorer

        t0 = time.perf_counter()
        if engine == "torch" and device == "cpu":
            import torch

            # Ray pins torch to the actor's num_cpus rounded down (0 -> 1); the actor's
            # threads are set on purpose instead: the CPUs it reserved, the rest decode
            torch.set_num_threads(threads)
        self.scorer = load_scorer(
            checkpoint, engine, device=device, batch_size=batch_size, precision=precision,
            max_pixels=max_pixels, compile=compile,
            **({"threads": threads} if engine == "onnx" else {}),
        )
        if model_id and self.scorer.model_id != model_id:
            from fiqa_core.errors import InputError

            raise InputError(
                f"{checkpoint} holds model {self.scorer.model_id}, but this run was planned "
                f"for {model_id}: the model changed after the run started, or an .onnx "
                "file's sidecar (<file>.json) is stale. Re-export (fiqa export) or delete "
                "the stale sidecar, then run again"
            )
        print(f"fiqa: scoring actor on {device}: {self.scorer.describe()} "
              f"({self.scorer.precision_reason}), "
              f"{threads} thread{'s' * (threads != 1)}, ready in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        self.scored_at = scored_at
        self.compile_logged = False
        self.die_after, self.fault_marker, self.batches = die_after, fault_marker, 0

    def _decode_deferred(self, batch: dict):
        """Decode the batch's deferred JPEGs on the actor's device in one call; their
        statuses, errors and sizes replace the placeholders. Returns the batch's pixels."""
        deferred = np.flatnonzero(batch["status"] == DEFERRED)
        if not len(deferred):
            return batch["pixels"]
        import torch

        from fiqa_core.batch_decode import prepare_batch

        pixels = torch.tensor(batch["pixels"], device=self.scorer.device)  # a copy: Ray's
        # arrays may be read-only
        decoded, results = prepare_batch(
            list(batch["encoded"][deferred]), self.scorer.preprocessing.size,
            self.scorer.device, self.scorer.max_pixels,
        )
        pixels[torch.as_tensor(deferred, device=pixels.device)] = decoded
        for name in ("status", "error", "width", "height"):  # Ray's arrays may be read-only
            batch[name] = np.array(batch[name], dtype=object)
            batch[name][deferred] = [getattr(r, name) for r in results]
        return pixels

    def _maybe_die(self) -> None:
        """Injected fault (tests only, :mod:`jobs.faults`): the process dies, once per output."""
        self.batches += 1
        if self.die_after is None or self.batches <= self.die_after:
            return
        if not storage.exists(self.fault_marker):
            storage.write_bytes(self.fault_marker, b"1")
            os._exit(1)

    def __call__(self, batch: dict) -> pa.Table:
        self._maybe_die()
        pixels = self._decode_deferred(batch)
        scores = self.scorer.score_prepared(pixels, batch["status"])
        if self.scorer.compiled and not self.compile_logged and self.scorer.compile_seconds:
            self.compile_logged = True
            print(f"fiqa: scoring actor compiled the model in {self.scorer.compile_seconds:.1f} s",
                  flush=True)
        df = pd.DataFrame({k: v for k, v in batch.items() if k not in ("pixels", "encoded")})
        df["etag"] = df["etag"].replace("", None)
        df = df.assign(
            **scores, model=self.scorer.model_id, reused=False, scored_at=self.scored_at
        )
        return arrow(df, OUTPUT_SCHEMA)
