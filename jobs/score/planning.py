"""Incremental planning: per image, skip it (already in this run's output), reuse its row
from the previous complete partition (same model, same file facts), or score it."""

from __future__ import annotations

import json
import logging
import uuid

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fiqa_core import storage
from fiqa_core.errors import InputError
from fiqa_core.tables import parquet_files

from .schema import CARRIED, FACTS, OUTPUT_SCHEMA, PLAN_SCHEMA, arrow

log = logging.getLogger("fiqa.score")
MARKER = "_SUCCESS"


def previous_partition(output: str, current: str) -> str | None:
    """The latest complete date partition before ``current`` (nightly incremental source)."""
    fs, root = fsspec.core.url_to_fs(output)
    if not fs.exists(root):
        return None
    this = current.rstrip("/").rsplit("/", 1)[-1]
    dates = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(root, detail=False)
        if p.rstrip("/").rsplit("/", 1)[-1].startswith("date=")
    )
    for name in reversed([d for d in dates if d < this]):
        if storage.exists(storage.join(output, name, MARKER)):
            return storage.join(output, name)
    return None


def buckets_of(partition: str | None) -> int | None:
    """The bucket count a complete partition was written with (from its ``_SUCCESS``)."""
    if partition is None:
        return None
    return json.loads(storage.read_bytes(storage.join(partition, MARKER))).get("buckets")


def plan(listing, out: str, previous: str | None, model_id: str):
    """Per image: score, or reuse (nightly, unchanged); rows already in ``out`` drop out."""
    if previous is None and not has_rows(out):
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


def has_rows(out: str) -> bool:
    """Whether the partition has any bucket folder yet (the lease alone does not count)."""
    fs, root = fsspec.core.url_to_fs(out)
    if not fs.exists(root):
        return False
    return any(p.rstrip("/").rsplit("/", 1)[-1].startswith("bucket=") for p in fs.ls(root, False))


def check_models(out: str, model_id: str) -> None:
    """Refuse a partition that holds rows of another model (an unfinished run with it):
    counting them as done would mix two models' scores under one ``_SUCCESS``."""
    if not has_rows(out):
        return
    import pyarrow.compute as pc

    fs, root = fsspec.core.url_to_fs(out)
    models: set[str] = set()
    for f in parquet_files(fs, root):
        try:
            column = pq.read_table(f, filesystem=fs, columns=["model"]).column("model")
        except Exception:  # a partial shard: planning removes it
            continue
        models.update(m for m in pc.unique(column).to_pylist() if m is not None)
    foreign = sorted(models - {model_id})
    if foreign:
        raise InputError(
            f"{out} holds rows of model {', '.join(foreign)} from an unfinished run, not of "
            f"{model_id}: write to another output (or run_date), or finish that run with its "
            "own model first"
        )


def repair(listing, out: str) -> dict:
    """Keep one row per listed path in every bucket of ``out`` (the latest scored), leaving
    buckets already right untouched. Rows of paths the listing lacks are kept and counted
    (``unlisted``, with an ``example``): whether to drop them is not this run's call."""
    counts = (
        listing.groupby("bucket")
        .map_groups(repair_bucket, fn_kwargs={"out": out}, batch_format="pandas")
        .to_pandas()
    )
    examples = [e for e in counts["example"] if e] if len(counts) else []
    return {
        "duplicates": int(counts["duplicates"].sum()) if len(counts) else 0,
        "unlisted": int(counts["unlisted"].sum()) if len(counts) else 0,
        "example": examples[0] if examples else None,
    }


def repair_bucket(group: pd.DataFrame, out: str) -> pd.DataFrame:
    bucket = int(group["bucket"].iloc[0])
    rows = read_bucket(out, bucket)  # removes partial shards first
    fs, root = fsspec.core.url_to_fs(storage.join(out, f"bucket={bucket}"))
    files = parquet_files(fs, root) if fs.exists(root) else []
    listed = rows["path"].isin(set(group["path"]))
    unlisted = rows.loc[~listed, "path"]
    keep = rows.sort_values("scored_at", kind="stable").drop_duplicates("path", keep="last")
    if len(keep) < len(rows):
        # the repaired file first, then the old ones: a crash between leaves duplicates,
        # which the next run repairs the same way
        fixed = f"{root}/repaired-{uuid.uuid4().hex}.parquet"
        table = arrow(keep.reset_index(drop=True).drop(columns=["bucket"], errors="ignore"),
                      pa.schema([f for f in OUTPUT_SCHEMA if f.name != "bucket"]))
        with fs.open(fixed, "wb") as f:
            pq.write_table(table, f)
        for old in files:
            fs.rm(old)
    return pd.DataFrame({
        "duplicates": [len(rows) - len(keep)],
        "unlisted": [unlisted.nunique()],
        "example": [unlisted.iloc[0] if len(unlisted) else ""],
    })


def read_bucket(partition: str | None, bucket: int, columns=None) -> pd.DataFrame:
    """Rows already written for one bucket of a partition; unreadable (partial) files removed."""
    empty = pd.DataFrame(columns=columns or OUTPUT_SCHEMA.names)
    if partition is None:
        return empty
    fs, root = fsspec.core.url_to_fs(storage.join(partition, f"bucket={bucket}"))
    if not fs.exists(root):
        return empty
    frames = []
    for f in parquet_files(fs, root):
        try:
            frames.append(pq.read_table(f, filesystem=fs, columns=columns).to_pandas())
        except Exception as e:  # a file cut short by an interrupted write: its rows redo
            log.warning("removing unreadable partial shard %s (%s)", f, e)
            fs.rm(f)
    return pd.concat(frames, ignore_index=True) if frames else empty


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
            for c in CARRIED:
                plan.loc[rows, c] = old.loc[same, c].to_numpy(dtype=object)
            plan.loc[rows, "action"] = "reuse"
    return arrow(plan, PLAN_SCHEMA)


def _plan_all(batch: pd.DataFrame) -> pa.Table:
    return arrow(batch.assign(action="score"), PLAN_SCHEMA)


def finish_reused(batch: pd.DataFrame) -> pa.Table:
    return arrow(batch.assign(reused=True), OUTPUT_SCHEMA)
