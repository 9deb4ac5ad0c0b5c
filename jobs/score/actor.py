"""The scoring stage: an actor pool, each actor holding the model on its engine."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from fiqa_core import storage
from fiqa_core.errors import InputError

from .pipeline import DEFERRED, stack_pixels
from .schema import OUTPUT_SCHEMA, arrow
from .worker_warnings import send_warnings

FAULT_MARKER = "_fault_injected"  # written by an injected actor death, removed on success
ACTOR_BATCH = 64  # rows handed to a scoring actor at once; it runs them in forward batches


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


class ScoreActor:
    """Loads the model once (on the run's engine, with the driver's decisions) and scores
    prepared rows; JPEGs deferred to it are decoded in one batch on its device, and with
    ``faces`` (photos deferred by the face stage) its faces are detected and aligned there
    too, a row per face (:func:`jobs.score.faces_stage.device_faces`)."""

    def __init__(self, load: str, model, options: dict, model_id: str,
                 pipeline: str, scored_at: str, die_after: int | None = None,
                 fault_marker: str | None = None, counter=None, faces: dict | None = None):
        from fiqa_core.extras import named

        from .progress import Tally
        from .worker_warnings import forward_warnings

        forward_warnings(counter)  # loading the model may warn too
        t0 = time.perf_counter()
        if not isinstance(model, (str, bytes)):  # a converted model in Ray's object store
            import ray

            model = ray.get(model)
        self.scorer = named(load)(model, **options)
        source = options.get("source") or "the model"
        if self.scorer.model_id != model_id:
            raise InputError(
                f"{source} holds model {self.scorer.model_id}, but this run was planned "
                f"for {model_id}: the model changed after the run started, or an .onnx "
                "file's sidecar (<file>.json) is stale. Re-export (fiqa export) or delete "
                "the stale sidecar, then run again"
            )
        threads = options.get("threads") or 1
        print(f"fiqa: scoring actor on {options['device']}: {self.scorer.describe()} "
              f"({self.scorer.precision_reason}), "
              f"{threads} thread{'s' * (threads != 1)}, ready in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        self.pipeline, self.scored_at = pipeline, scored_at
        self.compile_logged = False
        self.die_after, self.fault_marker, self.batches = die_after, fault_marker, 0
        self.tally = Tally(counter)
        self.faces, self.detector = faces, None
        if faces is not None:  # photos deferred by the face stage: detected on the device
            from fiqa_core.faces import Detector, DetectSettings

            self.detector = Detector(DetectSettings(threshold=faces["threshold"],
                                                    min_face=faces["min_face"]),
                                     device=str(self.scorer.device), backend="torch")

    def _pixels(self, batch: dict, status: np.ndarray):
        """The batch's prepared pixels (N x S x S x 3): decode-stage rows from their bytes,
        deferred JPEGs decoded on the actor's device in one call (their statuses, errors
        and sizes filled in)."""
        size = self.scorer.preprocessing.size
        deferred = np.flatnonzero(status == DEFERRED)
        if not len(deferred):
            return stack_pixels(batch["pixels"], size)
        import torch

        from fiqa_core.batch_decode import prepare_batch

        device = self.scorer.device
        on_device = torch.zeros((len(status), size, size, 3), dtype=torch.uint8, device=device)
        prepared = np.flatnonzero([len(p) > 0 for p in batch["pixels"]])
        if len(prepared):  # only the rows the decode stage prepared travel to the device
            on_device[torch.as_tensor(prepared, device=device)] = torch.from_numpy(
                stack_pixels(batch["pixels"][prepared], size)).to(device)
        decoded, results = prepare_batch(list(batch["encoded"][deferred]), size,
                                         self.scorer.device, self.scorer.max_pixels)
        on_device[torch.as_tensor(deferred, device=on_device.device)] = decoded
        for name in ("status", "error", "width", "height"):
            batch[name][deferred] = [getattr(r, name) for r in results]
        return on_device

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
        batch = {k: np.array(v, dtype=object) if k in ("status", "error", "width", "height")
                 else v for k, v in batch.items()}  # Ray's arrays may be read-only
        if self.faces is not None:  # a row per face (or per photo without one)
            from .faces_stage import device_faces

            batch, pixels = device_faces(batch, self.detector, self.faces,
                                         self.scorer.preprocessing.size,
                                         self.scorer.max_pixels)
        else:
            pixels = self._pixels(batch, batch["status"])
        scores = self.scorer.score_prepared(pixels, batch["status"])
        if self.scorer.compiled and not self.compile_logged and self.scorer.compile_seconds:
            self.compile_logged = True
            print(f"fiqa: scoring actor compiled the model in {self.scorer.compile_seconds:.1f} s",
                  flush=True)
        df = pd.DataFrame({k: v for k, v in batch.items() if k not in ("pixels", "encoded")})
        df = df.assign(**scores, model=self.scorer.model_id, pipeline=self.pipeline,
                       reused=False, scored_at=self.scored_at)
        self.tally.add(len(df), int((df["status"] != "ok").sum()))
        send_warnings()
        return arrow(df, OUTPUT_SCHEMA)
