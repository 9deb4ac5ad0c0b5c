"""``fiqa pseudo-label`` and ``fiqa score``: one Ray Data pipeline over an image lake.

    fiqa score input=s3://lake/faces/ model=s3://models/student output=s3://scores/faces
    fiqa pseudo-label input=s3://lake/set-a/ model=s3://models/t0 output=s3://pl/a

list (partitioned by sub-prefix, in Ray tasks) -> plan per path bucket (skip what is done,
carry forward what is unchanged) -> read + decode + resize + crop (CPU tasks) -> score
(actor pool, model loaded once per actor) -> Parquet, partitioned by bucket. One row per
image file, always: bad images are rows with a status, never dropped.

``fiqa score`` writes ``<output>/date=YYYY-MM-DD/`` and reuses the scores of images whose
model and file facts (size, mtime, etag) are unchanged since the latest complete date;
``fiqa pseudo-label`` writes ``<output>/`` directly. Both are resumable: a rerun scores only
the rows missing from the output, and ``_SUCCESS`` (with counts) is written last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fiqa_core import storage
from fiqa_core.config import ConfigError, resolve_config
from fiqa_core.images import DEFAULT_MAX_PIXELS, prepare_image
from fiqa_core.lake import bucket_of, is_image_path, list_top, list_under, load_images
from fiqa_core.tables import parquet_files
from jobs.cli import settings_parser

log = logging.getLogger("fiqa.score")
MARKER = "_SUCCESS"
FAULT_MARKER = "_fault_injected"  # written by fail_after_batches, removed on success

OUTPUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("score", pa.float64()),
        ("raw_score", pa.float64()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("reused", pa.bool_()),
        ("scored_at", pa.string()),
        ("bucket", pa.int64()),
    ]
)
PLAN_SCHEMA = pa.schema([*OUTPUT_SCHEMA, ("action", pa.string())])


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of a scoring or pseudo-labeling run."""

    input: str  # folder/prefix, glob, or a manifest .parquet with a 'path' column
    model: str  # checkpoint directory (local or URI)
    output: str  # shard folder (local or URI)
    run_date: str | None = None  # fiqa score: partition date YYYY-MM-DD (default: today, UTC)
    buckets: int = 64  # output partitions by path hash; keep it fixed across runs
    batch_size: int = 64  # images per forward pass
    decode_batch_size: int = 32  # images per decode task
    read_threads: int = 16  # concurrent object reads per decode task
    scorers: int | None = None  # scoring actors (default: one per GPU, else 1)
    scorer_cpus: float = 1.0  # CPUs reserved per scoring actor
    use_gpu: bool | None = None  # None: when the cluster has GPUs
    draft: bool = False  # reduced-scale JPEG decoding (faster, slightly different pixels)
    max_pixels: int = DEFAULT_MAX_PIXELS
    address: str | None = None
    fail_after_batches: int | None = None  # fault injection: one scoring actor dies once


def get_args_parser(prog: str = "fiqa score") -> argparse.ArgumentParser:
    return settings_parser(prog, (__doc__ or "").split("\n\n")[0], ScoreConfig)


def main(args: argparse.Namespace, nightly: bool = True) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(ScoreConfig, args.config, args.overrides)
        run(cfg, nightly=nightly)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"{'fiqa score' if nightly else 'fiqa pseudo-label'}: error: {e}")
        return 2
    return 0


def partition_uri(cfg: ScoreConfig, nightly: bool) -> str:
    if not nightly:
        return cfg.output
    date = cfg.run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise ConfigError(f"run_date must be YYYY-MM-DD, got {date!r}") from None
    return storage.join(cfg.output, f"date={date}")


def previous_partition(cfg: ScoreConfig, current: str) -> str | None:
    """The latest complete date partition before ``current`` (nightly incremental source)."""
    fs, root = fsspec.core.url_to_fs(cfg.output)
    if not fs.exists(root):
        return None
    this = current.rstrip("/").rsplit("/", 1)[-1]
    dates = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(root, detail=False)
        if p.rstrip("/").rsplit("/", 1)[-1].startswith("date=")
    )
    for name in reversed([d for d in dates if d < this]):
        if storage.exists(storage.join(cfg.output, name, MARKER)):
            return storage.join(cfg.output, name)
    return None


def run(cfg: ScoreConfig, nightly: bool = True) -> dict:
    """Score every image under ``cfg.input``; returns the ``_SUCCESS`` summary."""
    from fiqa_core import read_checkpoint_config
    from jobs.ray_env import cluster_has_gpus, init_ray

    if cfg.buckets < 1 or cfg.batch_size < 1 or cfg.decode_batch_size < 1:
        raise ConfigError("buckets, batch_size and decode_batch_size must be >= 1")
    model = read_checkpoint_config(cfg.model)
    out = partition_uri(cfg, nightly)
    marker = storage.join(out, MARKER)
    if storage.exists(marker):
        summary = json.loads(storage.read_bytes(marker))
        if summary.get("model") == model.id and summary.get("input") == cfg.input:
            print(f"{out} is complete ({summary['rows']} rows, model {model.id}); nothing to do.")
            return summary
        raise ConfigError(
            f"{out} already holds a complete run with model {summary.get('model')} over "
            f"{summary.get('input')}; write to another output (or run_date)"
        )
    t0 = time.time()
    init_ray(cfg.address, min_cpus=2)
    use_gpu = cluster_has_gpus() if cfg.use_gpu is None else cfg.use_gpu
    listing, n_files = list_images(cfg)
    images = listing.count()
    print(f"fiqa: listed {n_files} files, {images} images ({time.time() - t0:.0f} s)", flush=True)
    previous = previous_partition(cfg, out) if nightly else None
    prev_buckets = _buckets_of(previous)
    if previous and prev_buckets != cfg.buckets:
        log.warning(
            "%s used %s buckets, not %d: rescoring everything", previous, prev_buckets, cfg.buckets
        )
        previous = None
    run_stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    planned = plan(listing, out, previous, model.id)
    print(f"fiqa: planned what to score and reuse ({time.time() - t0:.0f} s)", flush=True)
    to_score = planned.filter(expr=_col("action") == "score")
    reused = planned.filter(expr=_col("action") == "reuse").map_batches(
        _finish_reused, batch_format="pandas"
    )
    scored = score_stages(to_score, cfg, model.preprocessing.size, use_gpu, run_stamp)
    scored.union(reused).write_parquet(out, partition_cols=["bucket"])
    summary = summarise(out)
    summary.update(
        input=cfg.input,
        model=model.id,
        files_listed=n_files,
        images=images,
        skipped_non_image=n_files - images,
        seconds=round(time.time() - t0, 1),
        buckets=cfg.buckets,
        run_started=run_stamp,
    )
    summary["images_per_s"] = round(summary["scored"] / max(summary["seconds"], 1e-9), 1)
    if summary["rows"] != images:
        raise RuntimeError(
            f"{out}: {summary['rows']} rows for {images} images; the partition holds rows "
            "from files that have since changed or gone. Delete it and run again."
        )
    storage.write_bytes(marker, json.dumps(summary, indent=2).encode())
    fault_marker = storage.join(cfg.output, FAULT_MARKER)
    if storage.exists(fault_marker):
        fs, path = fsspec.core.url_to_fs(fault_marker)
        fs.rm(path)
    print(
        f"Scored {summary['scored']} images and reused {summary['reused']} unchanged ones "
        f"({summary['failed']} could not be scored: {summary['by_status']}) out of "
        f"{images} images ({summary['skipped_non_image']} non-image files skipped) in "
        f"{summary['seconds']:.0f} s, {summary['images_per_s']} images/s, with model "
        f"{model.id}. Output: {out} (complete: {MARKER} written)."
    )
    return summary


def plan(listing, out: str, previous: str | None, model_id: str):
    """Per image: score, or reuse (nightly, unchanged); rows already in ``out`` drop out."""
    if previous is None and not storage.exists(out):
        # a first run into an empty output: nothing to skip or carry, so no shuffle by bucket
        return listing.map_batches(_plan_all, batch_format="pandas")
    return (
        listing.groupby("bucket")
        .map_groups(
            plan_bucket,
            fn_kwargs={"done": out, "previous": previous, "model_id": model_id},
            batch_format="pandas",
        )
        .materialize()
    )


def score_stages(to_score, cfg: ScoreConfig, size: int, use_gpu: bool, run_stamp: str):
    """CPU decode tasks, then the scoring actor pool (one actor per GPU by default)."""
    import ray

    n_gpus = int(ray.cluster_resources().get("GPU", 0)) if use_gpu else 0
    decoded = to_score.map_batches(
        decode_batch,
        fn_kwargs={
            "size": size,
            "draft": cfg.draft,
            "max_pixels": cfg.max_pixels,
            "threads": cfg.read_threads,
        },
        batch_size=cfg.decode_batch_size,
        batch_format="pandas",
        # a remote-args function keeps Ray from fusing decoding into the scoring actors,
        # where it would run one batch at a time instead of on every CPU
        ray_remote_args_fn=lambda: {"num_cpus": 1},
    )
    return decoded.map_batches(
        ScoreActor,
        fn_constructor_kwargs={
            "checkpoint": cfg.model,
            "device": "cuda" if use_gpu else "cpu",
            "batch_size": cfg.batch_size,
            "scored_at": run_stamp,
            "fail_after": cfg.fail_after_batches,
            "fault_marker": storage.join(cfg.output, FAULT_MARKER),
        },
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.scorers or max(1, n_gpus)),
        num_gpus=1 if use_gpu else 0,
        num_cpus=cfg.scorer_cpus,
    )


def _col(name: str):
    from ray.data.expressions import col

    return col(name)


# -- listing ---------------------------------------------------------------------------


def list_images(cfg: ScoreConfig):
    """All files under the input, as a materialized dataset of images + the file count.

    The driver lists one level; each subfolder is listed recursively in its own Ray task, so
    a lake of many prefixes is listed in parallel and no path list passes through the driver.
    """
    import ray

    from jobs.ray_env import read_parquet

    if cfg.input.lower().endswith((".parquet", ".pq")):
        manifest = read_parquet(cfg.input)
        if "path" not in manifest.columns():
            raise ConfigError(f"{cfg.input}: manifest needs a 'path' column")
        listed = manifest.map_batches(_manifest_rows, batch_format="pandas")
    else:
        root_files, dirs = list_top(cfg.input)
        parts = [ray.data.from_pandas(pd.DataFrame(root_files, columns=["path", *FACTS]))]
        if dirs:
            parts.append(
                ray.data.from_items([{"dir": d} for d in dirs]).flat_map(
                    lambda row: list_under(cfg.input, row["dir"])
                )
            )
        listed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    listed = listed.map_batches(
        _tag_listing, fn_kwargs={"buckets": cfg.buckets}, batch_format="pandas"
    ).materialize()
    n_files = listed.count()
    images = listed.filter(expr=_col("is_image")).drop_columns(["is_image"]).materialize()
    if n_files == 0:
        raise FileNotFoundError(f"{cfg.input}: no files found")
    return images, n_files


FACTS = ("size", "mtime", "etag")


def _manifest_rows(batch: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"path": batch["path"].astype(str)})
    for c in FACTS:
        out[c] = batch[c] if c in batch.columns else None
    return out


LISTING_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("bucket", pa.int64()),
        ("is_image", pa.bool_()),
    ]
)


def _tag_listing(batch: pd.DataFrame, buckets: int) -> pa.Table:
    paths = batch["path"].astype(str)
    values = {
        "path": paths,
        "size": pd.to_numeric(batch["size"]).astype("Int64"),
        "mtime": pd.to_numeric(batch["mtime"]).astype("float64"),
        "etag": batch["etag"].astype(object),
        "bucket": paths.map(lambda p: bucket_of(p, buckets)),
        "is_image": paths.map(is_image_path),
    }
    return pa.table(
        {f.name: pa.array(values[f.name], type=f.type, from_pandas=True) for f in LISTING_SCHEMA},
        schema=LISTING_SCHEMA,
    )


# -- planning: what is done, what can be carried forward ----------------------------------


def read_bucket(partition: str | None, bucket: int, columns=None) -> pd.DataFrame:
    """Rows already written for one bucket of a partition; unreadable (partial) files removed."""
    if partition is None:
        return pd.DataFrame(columns=columns or OUTPUT_SCHEMA.names)
    fs, root = fsspec.core.url_to_fs(storage.join(partition, f"bucket={bucket}"))
    if not fs.exists(root):
        return pd.DataFrame(columns=columns or OUTPUT_SCHEMA.names)
    frames = []
    for f in parquet_files(fs, root):
        try:
            frames.append(pq.read_table(f, filesystem=fs, columns=columns).to_pandas())
        except Exception as e:  # a file cut short by an interrupted write: its rows redo
            log.warning("removing unreadable partial shard %s (%s)", f, e)
            fs.rm(f)
    if not frames:
        return pd.DataFrame(columns=columns or OUTPUT_SCHEMA.names)
    return pd.concat(frames, ignore_index=True)


def _same_facts(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    same = np.ones(len(a), dtype=bool)
    for c in FACTS:
        x, y = a[c].to_numpy(dtype=object), b[c].to_numpy(dtype=object)
        same &= np.array([(pd.isna(u) and pd.isna(v)) or u == v for u, v in zip(x, y, strict=True)])
    return same


def plan_bucket(group: pd.DataFrame, done: str, previous: str | None, model_id: str) -> pa.Table:
    """Decide per listed image: already in this run's output (drop), reuse, or score."""
    bucket = int(group["bucket"].iloc[0])
    finished = set(read_bucket(done, bucket, columns=["path"])["path"])
    todo = group[~group["path"].isin(finished)].reset_index(drop=True)
    plan = pd.DataFrame({c: [None] * len(todo) for c in PLAN_SCHEMA.names})
    for c in ("path", "bucket", *FACTS):
        plan[c] = todo[c].to_numpy(dtype=object)
    plan["action"] = "score"
    prev = read_bucket(previous, bucket)
    if len(prev) and len(plan):
        prev = prev[(prev["model"] == model_id) & (prev["status"] != "read_error")]
        prev = prev.drop_duplicates("path", keep="last").set_index("path")
        hit = plan["path"].isin(prev.index).to_numpy()
        if hit.any():
            old = prev.loc[plan.loc[hit, "path"]].reset_index()
            same = _same_facts(plan.loc[hit].reset_index(drop=True), old)
            rows = np.flatnonzero(hit)[same]
            for c in (
                "score",
                "raw_score",
                "model",
                "status",
                "error",
                "width",
                "height",
                "scored_at",
            ):
                plan.loc[rows, c] = old.loc[same, c].to_numpy(dtype=object)
            plan.loc[rows, "action"] = "reuse"
    return _arrow(plan, PLAN_SCHEMA)


def _plan_all(batch: pd.DataFrame) -> pa.Table:
    return _arrow(batch.assign(action="score"), PLAN_SCHEMA)


def _finish_reused(batch: pd.DataFrame) -> pa.Table:
    return _arrow(batch.assign(reused=True), OUTPUT_SCHEMA)


def _arrow(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """One explicit schema for every block (Ray cannot combine mixed or all-null types).

    Missing values (None, NaN) become nulls: a refused image has a null score.
    """
    missing = [None] * len(df)
    return pa.table(
        {
            f.name: pa.array(
                df[f.name] if f.name in df.columns else missing, type=f.type, from_pandas=True
            )
            for f in schema
        },
        schema=schema,
    )


# -- decode and score ------------------------------------------------------------------


def decode_batch(
    batch: pd.DataFrame, size: int, draft: bool, max_pixels: int, threads: int
) -> dict:
    """Read (retrying) + decode + resize + centre-crop each image; one status per row."""
    results = load_images(
        list(batch["path"]),
        lambda data: prepare_image(data, size, max_pixels=max_pixels, draft=draft),
        threads,
    )
    pixels = np.zeros((len(batch), size, size, 3), dtype=np.uint8)
    for i, d in enumerate(results):
        if d.ok:
            pixels[i] = d.image
    return {
        "path": batch["path"].to_numpy(dtype=object),
        "size": batch["size"].to_numpy(dtype=object),
        "mtime": batch["mtime"].to_numpy(dtype=object),
        # "" stands for no etag inside the pipeline: an all-None object column makes Ray
        # fall back to pickling; ScoreActor turns it back into null
        "etag": batch["etag"].fillna("").astype(str).to_numpy(),
        "bucket": batch["bucket"].to_numpy(dtype=np.int64),
        "status": np.array([d.status for d in results], dtype=object),
        "error": np.array([d.error for d in results], dtype=object),
        "width": np.array([d.width for d in results], dtype=object),
        "height": np.array([d.height for d in results], dtype=object),
        "pixels": pixels,
    }


class ScoreActor:
    """Scoring stage: loads the checkpoint once per actor, scores prepared pixels."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        batch_size: int,
        scored_at: str,
        fail_after: int | None = None,
        fault_marker: str | None = None,
    ):
        import torch

        from fiqa_core import Scorer

        if device == "cpu":
            # Ray pins OMP/torch threads to the actor's num_cpus (1): on a CPU node the model
            # is the wall, so let it use every core; decode tasks time-share with it
            torch.set_num_threads(os.cpu_count() or 1)
        self.scorer = Scorer.from_checkpoint(checkpoint, device=device, batch_size=batch_size)
        self.scored_at = scored_at
        self.fail_after, self.fault_marker, self.batches = fail_after, fault_marker, 0

    def _maybe_die(self) -> None:
        """Fault injection (fail_after_batches): the actor process dies, once per output."""
        self.batches += 1
        if self.fail_after is None or self.batches <= self.fail_after:
            return
        if not storage.exists(self.fault_marker):
            storage.write_bytes(self.fault_marker, b"1")
            os._exit(1)

    def __call__(self, batch: dict) -> pa.Table:
        self._maybe_die()
        ok = batch["status"] == "ok"
        raw = np.full(len(ok), np.nan)
        if ok.any():
            raw[ok] = self.scorer.score_pixels(batch["pixels"][ok])
        df = pd.DataFrame({k: v for k, v in batch.items() if k != "pixels"})
        df["etag"] = df["etag"].replace("", None)
        df = df.assign(
            raw_score=raw,
            score=self.scorer.calibrate(raw),
            model=self.scorer.model_id,
            reused=False,
            scored_at=self.scored_at,
        )
        return _arrow(df, OUTPUT_SCHEMA)


# -- completion ----------------------------------------------------------------------


def summarise(partition: str) -> dict:
    """Counts over a written partition, streamed file by file (flat memory)."""
    fs, root = fsspec.core.url_to_fs(partition)
    by_status: dict[str, int] = {}
    rows = reused = 0
    for f in parquet_files(fs, root):
        t = pq.read_table(f, filesystem=fs, columns=["status", "reused"])
        rows += t.num_rows
        reused += int(pa.compute.sum(t["reused"]).as_py() or 0)
        for k, v in pd.Series(t["status"].to_pylist()).value_counts().items():
            by_status[k] = by_status.get(k, 0) + int(v)
    failed = rows - by_status.get("ok", 0)
    return {
        "rows": rows,
        "scored": rows - reused,
        "reused": reused,
        "failed": failed,
        "by_status": by_status,
    }


def _buckets_of(partition: str | None) -> int | None:
    if partition is None:
        return None
    return json.loads(storage.read_bytes(storage.join(partition, MARKER))).get("buckets")


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
