"""Incremental planning: per image, skip it (already in this run's output), reuse its row
from the previous complete partition (same pipeline id, same file facts), or score it.

Only this run's own partition, under its lease, is ever changed here: a Parquet file in it
that is provably cut short (its footer missing: :func:`~.reading.is_partial`) is removed
and its rows redone, and the carried rows of an attempt before are carried again. A file of
the previous, committed partition is only read (:mod:`.reading`); any error reading it
(after the store client's retries) fails the run, with nothing removed.
"""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fiqa_core import storage
from fiqa_core.errors import InputError
from fiqa_core.tables import parquet_files

from .commit import MARKER
from .commit import parquet_files as partition_files
from .reading import CARRY, committed_files, read_bucket, read_file, read_previous
from .rows import KEY_COLUMNS, complete_paths, kept, key_of
from .schema import CARRIED, FACTS, FILE_SCHEMA, PLAN_SCHEMA, ROW_GROUP_ROWS, arrow

log = logging.getLogger("fiqa.score")


def buckets_of(partition: str | None) -> int | None:
    """The bucket count a complete partition was written with (from its ``_SUCCESS``)."""
    if partition is None:
        return None
    return json.loads(storage.read_bytes(storage.join(partition, MARKER))).get("buckets")


PLAN_IN_DRIVER_ROWS = 100_000  # a listing this small is planned by the driver, not a shuffle


def plan(listing, out: str, previous: str | None, pipeline: str, buckets: int, legacy,
         tasks: int | None = None, rows: int | None = None):
    """The rows to score: those neither in ``out`` already nor unchanged since ``previous``
    (nightly: same pipeline id, same facts), whose rows :func:`plan_bucket` carries forward
    into ``out`` as it plans. ``legacy(model_id)``: the pipeline id of a row written before
    rows carried one.

    A listing of up to :data:`PLAN_IN_DRIVER_ROWS` images (``rows``) is planned bucket by
    bucket in the driver's threads: 1.3 s for 2,000 images on the 2-core machine, where
    Ray's shuffle took 7 s in tasks and their processes. A larger one is shuffled by bucket
    into ``tasks`` partitions (at most one per bucket; each plans its buckets one by one):
    Ray's default (200) spent ~15 s scheduling empty reduce tasks on a 2-core machine for a
    16-image night, and one task per bucket cost more in overheads than their work on a
    small cluster. The plan is materialized before the score stages start: streamed into
    them (the scoring actors starting during the shuffle), a 1M-image night with 15,000
    changed took 42.5-48.3 s to plan and score instead of 33.8-42.8 s (2 cores: the
    shuffle and the actors' start then share them).
    """
    if previous is None and not has_rows(out):
        # a first run into an empty output: nothing to skip or carry, so no shuffle by bucket
        return listing.map_batches(_plan_all, batch_format="pandas")
    kwargs = {"done": out, "previous": previous, "pipeline": pipeline, "legacy": legacy,
              "previous_files": committed_files(previous)}
    if rows is not None and rows <= PLAN_IN_DRIVER_ROWS:
        return _plan_here(listing, kwargs)
    return (
        listing.groupby("bucket", num_partitions=max(1, min(buckets, tasks or buckets)))
        .map_groups(plan_bucket, fn_kwargs=kwargs, batch_format="pandas")
        .materialize()
    )


def _plan_here(listing, kwargs: dict):
    """:func:`plan_bucket` over each bucket of a small listing, in the driver's threads
    (Parquet reads release the GIL); a materialized dataset of the rows to score."""
    import ray

    groups = [g.reset_index(drop=True) for _, g in listing.to_pandas().groupby("bucket")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        tables = list(pool.map(lambda g: plan_bucket(g, **kwargs), groups))
    return ray.data.from_arrow(tables or [PLAN_SCHEMA.empty_table()])


def has_rows(out: str) -> bool:
    """Whether the partition has any bucket folder yet (the lease alone does not count)."""
    fs, root = fsspec.core.url_to_fs(out)
    if not fs.exists(root):
        return False
    return any(p.rstrip("/").rsplit("/", 1)[-1].startswith("bucket=") for p in fs.ls(root, False))


def check_pipelines(out: str, pipeline: str, model_id: str) -> None:
    """Refuse a partition that holds rows of another pipeline (an unfinished run with
    another model or settings): counting them as done would mix two pipelines' scores
    under one ``_SUCCESS``. Rows written before rows carried a pipeline id are checked by
    their model, as then."""
    if not has_rows(out):
        return
    fs, _ = fsspec.core.url_to_fs(out)
    found: dict[str, str] = {}  # pipeline id -> model
    for f in partition_files(out):
        table = read_file(fs, f, ["model", "pipeline"], own=True, remove=False)
        if table is None:  # a partial file, which planning removes
            continue
        rows = table.to_pandas().dropna(subset=["model"])
        if "pipeline" not in rows.columns:
            rows["pipeline"] = None
        old = rows["pipeline"].isna()  # by model: ours if it is this run's model
        rows.loc[old, "pipeline"] = [pipeline if m == model_id else f"model {m}"
                                     for m in rows.loc[old, "model"]]
        found.update(zip(rows["pipeline"], rows["model"], strict=True))
    foreign = sorted(set(found) - {pipeline})
    if foreign:
        models = sorted({found[p] for p in foreign})
        same = " (the same model, other settings: draft, max_pixels or a stage)" if (
            models == [model_id]) else ""
        raise InputError(
            f"{out} holds rows of model {', '.join(models)}{same} from an unfinished run, "
            f"not of {model_id} with these settings (pipeline {pipeline}): write to another "
            "output (or run_date), or finish that run with its own model and settings first"
        )


def with_pipeline(rows: pd.DataFrame, legacy) -> pd.DataFrame:
    """``rows`` with a pipeline id on each: rows written before rows carried one get
    ``legacy(model)``, the default pipeline of their model."""
    if "pipeline" not in rows.columns:
        rows = rows.assign(pipeline=None)
    missing = rows["pipeline"].isna()
    if missing.any():
        ids = {m: legacy(m) for m in rows.loc[missing, "model"].dropna().unique()}
        rows = rows.copy()
        rows.loc[missing, "pipeline"] = rows.loc[missing, "model"].map(ids)
    return rows


def repair(listing, out: str, buckets: int) -> dict:
    """Keep one row per listed path (per face of it, of its newest whole attempt:
    :func:`.rows.kept`) in every bucket of ``out``, leaving buckets already right
    untouched. Rows of paths the listing lacks are kept and counted (``unlisted``, with an
    ``example``): whether to drop them is not this run's call."""
    counts = (
        listing.groupby("bucket", num_partitions=buckets)
        .map_groups(repair_bucket, fn_kwargs={"out": out}, batch_format="pandas")
        .to_pandas()
    )
    examples = [e for e in counts["example"] if e] if len(counts) else []
    return {
        "listed": int(counts["listed"].sum()) if len(counts) else 0,
        "duplicates": int(counts["duplicates"].sum()) if len(counts) else 0,
        "unlisted": int(counts["unlisted"].sum()) if len(counts) else 0,
        "example": examples[0] if examples else None,
    }


def repair_bucket(group: pd.DataFrame, out: str) -> pd.DataFrame:
    bucket = int(group["bucket"].iloc[0])
    rows = read_bucket(out, bucket, own=True)  # removes partial files first
    fs, root = fsspec.core.url_to_fs(storage.join(out, f"bucket={bucket}"))
    files = parquet_files(fs, root) if fs.exists(root) else []
    listed = rows["path"].isin(set(group["path"]))
    unlisted = rows.loc[~listed, "path"]
    keep = kept(rows)
    if len(keep) < len(rows):
        # the repaired file first, then the old ones: a crash between leaves duplicates,
        # which the next run repairs the same way
        fixed = f"{root}/repaired-{uuid.uuid4().hex}.parquet"
        table = arrow(keep.reset_index(drop=True).drop(columns=["bucket"], errors="ignore"),
                      FILE_SCHEMA)
        with storage.ParquetOutput(fs, fixed) as f:  # published whole or not at all
            pq.write_table(table, f)
        for old in files:
            fs.rm(old)
    return pd.DataFrame({
        "listed": [group["path"].nunique()],
        "duplicates": [len(rows) - len(keep)],
        "unlisted": [unlisted.nunique()],
        "example": [unlisted.iloc[0] if len(unlisted) else ""],
    })


def same_facts(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Row by row, whether every fact of ``a`` equals ``b``'s (both unknown counts as
    equal), vectorised: a night compares a million rows' facts in well under a second."""
    same = np.ones(len(a), dtype=bool)
    for c in FACTS:
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        if c == "etag":
            x, y = x.astype(object), y.astype(object)
        else:  # numbers: nullable floats compare the same whatever pandas made of them
            x, y = pd.to_numeric(x).astype("Float64"), pd.to_numeric(y).astype("Float64")
        both_unknown = (x.isna() & y.isna()).to_numpy(dtype=bool)
        equal = (x == y).fillna(False).to_numpy(dtype=bool)
        same &= equal | both_unknown
    return same


def plan_bucket(group: pd.DataFrame, done: str, previous: str | None, pipeline: str,
                legacy, previous_files: dict[int, list[str]] | None = None) -> pa.Table:
    """Per listed image of one bucket: already scored in this run's output (dropped),
    unchanged since ``previous`` (its row carried forward), or to score (the rows returned).
    ``previous_files``: ``previous``'s files by bucket (:func:`committed_files`).

    Carried rows never pass through the pipeline: they are written here, straight into this
    run's bucket folder, as one file published whole. So a night's cost follows what
    changed: a million-image night moves only its new rows. A rerun of the night carries
    again: its driver removes the attempt before's carried rows first
    (:func:`~.reading.drop_all_carried`); Ray retrying this task, with the same listing,
    finds this attempt's carried rows done."""
    bucket = int(group["bucket"].iloc[0])
    # an image is done when one attempt's rows of it are whole (with faces=all, a photo's
    # face rows may be in two files, one written before a crash: it is scored again)
    finished = complete_paths(read_bucket(done, bucket, columns=list(KEY_COLUMNS), own=True))
    todo = group[~group["path"].isin(finished)].drop_duplicates("path").reset_index(drop=True)
    reuse = np.zeros(len(todo), dtype=bool)
    prev = read_previous(previous, bucket, previous_files) if len(todo) else pd.DataFrame()
    if len(prev):
        prev = with_pipeline(prev, legacy)
        prev = prev[(prev["pipeline"] == pipeline) & (prev["status"] != "read_error")]
        prev = prev.drop_duplicates(key_of(prev), keep="last").reset_index(drop=True)
        pairs = todo[["path", *FACTS]].reset_index(names="todo_row").merge(
            prev.reset_index(names="prev_row"), on="path", suffixes=("", "_prev"))
        facts_prev = pairs[[f"{c}_prev" for c in FACTS]].set_axis(list(FACTS), axis=1)
        pairs = pairs[same_facts(pairs, facts_prev)]
        if len(pairs):
            reuse[pairs["todo_row"].to_numpy()] = True
            carry_forward(prev.iloc[pairs["prev_row"].to_numpy()], todo.iloc[
                pairs["todo_row"].to_numpy()], done, bucket)
    return arrow(todo[~reuse], PLAN_SCHEMA)


def carry_forward(prev: pd.DataFrame, listed: pd.DataFrame, out: str, bucket: int) -> None:
    """Write the rows carried from the night before into ``out``'s bucket folder: their
    scores and the listing's facts (equal), marked reused; the file is published whole."""
    # a night written before a column existed (face_*) carries it as null (arrow() fills
    # a column the frame lacks with nulls of its type)
    rows = prev[[c for c in CARRIED if c in prev.columns]].reset_index(drop=True)
    for c in ("path", *FACTS):
        rows[c] = listed[c].to_numpy(dtype=object)
    rows["reused"] = True
    table = arrow(rows, FILE_SCHEMA)
    fs, root = fsspec.core.url_to_fs(storage.join(out, f"bucket={bucket}"))
    with storage.ParquetOutput(fs, f"{root}/{CARRY}{uuid.uuid4().hex}.parquet") as f:
        pq.write_table(table, f, row_group_size=ROW_GROUP_ROWS)


def _plan_all(batch: pd.DataFrame) -> pa.Table:
    return arrow(batch, PLAN_SCHEMA)


