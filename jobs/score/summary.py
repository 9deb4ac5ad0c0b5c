"""Completion: counts over a written partition, and the line a user reads at the end."""

from __future__ import annotations

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from .commit import parquet_files
from .rows import KEY_COLUMNS, counts


def summarise(partition: str, files: dict[str, int] | None = None) -> dict:
    """Counts over a written partition, streamed bucket by bucket (memory: one bucket's
    paths); with each file's rows (``rows_by_file``, by name relative to the partition) for
    its manifest; ``paths`` (distinct), ``duplicate_rows`` (rows repair would drop),
    ``face_rows`` (rows of one face) and ``incomplete`` (photos without a whole attempt:
    :mod:`.rows`).
    ``files``: the partition's files (:func:`~jobs.score.commit.data_files`), if listed."""
    fs, root = fsspec.core.url_to_fs(partition)
    by_status: dict[str, int] = {}
    rows = reused = 0
    found = {"paths": 0, "duplicate_rows": 0, "face_rows": 0, "incomplete": 0}
    files = parquet_files(partition, files)
    per_file = {}
    by_bucket: dict[str, list] = {}  # a path's rows are all in its bucket's folder
    for f in files:
        by_bucket.setdefault(f.rsplit("/", 1)[0], []).append(f)
    for folder in by_bucket.values():  # one bucket's paths in memory at a time
        keys = []
        for f in folder:
            with pq.ParquetFile(f, filesystem=fs) as pf:  # one open: its footer, its columns
                t = pf.read(columns=["status", "reused", *[  # an older file: no face columns
                    c for c in KEY_COLUMNS if c in pf.schema_arrow.names]])
            rows += t.num_rows
            per_file[f[len(root.rstrip("/")):].lstrip("/")] = t.num_rows
            reused += int(pa.compute.sum(t["reused"]).as_py() or 0)
            for k, v in pd.Series(t["status"].to_pylist()).value_counts().items():
                by_status[k] = by_status.get(k, 0) + int(v)
            keys.append(t.drop_columns(["status", "reused"]))
        if keys:
            for k, v in counts(pa.concat_tables(keys, promote_options="default")).items():
                found[k] += v
    failed = rows - by_status.get("ok", 0)
    return {
        "rows": rows,
        "scored": rows - reused,
        "reused": reused,
        "failed": failed,
        "by_status": by_status,
        "files": len(files),
        "rows_by_file": per_file,
        **found,
    }


def final_line(summary: dict, out: str, marker: str) -> str:
    unit = "images"
    if summary.get("faces") == "all":  # a row per face
        unit = f"rows (faces=all: {summary['face_rows']} faces, a row each)"
    return (
        f"Scored {summary['scored']} {unit} and reused {summary['reused']} unchanged ones "
        f"({summary['failed']} could not be scored: {summary['by_status']}) out of "
        f"{summary['images']} images ({summary['skipped_non_image']} non-image files skipped) "
        f"in {summary['seconds']:.0f} s, {summary['images_per_s']} images/s, with model "
        f"{summary['model']}. Output: {out}, {summary['files']} Parquet files (complete: "
        f"{marker} written)." + _damaged_note(summary, marker)
    )


def _damaged_note(summary: dict, marker: str) -> str:
    damaged = summary.get("previous_damaged")
    if not damaged:
        return ""
    return (f" {len(damaged)} earlier partition(s) did not match their {marker} and were not "
            "reused (see the warnings above).")
