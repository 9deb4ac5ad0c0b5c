"""What a row of a partition stands for: an image (``faces=none`` or ``largest``, and any
image without a face or that could not be read), or one face of a photo (``faces=all``:
``face`` 0..k-1, each row saying ``face_count`` k). Planning, verify, repair and the
summary key rows on (path, face) and ask whether an image's rows are whole: a photo's face
rows may land in different files (the scorer batches rows, not photos), so a run stopped
between two writes leaves some of them, and the photo is scored again."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KEY = ("path", "face")  # a row's identity: its image, and its face (null: the image itself)
KEY_COLUMNS = ("path", "face", "face_count")  # what the questions below read


def key_of(rows: pd.DataFrame) -> list[str]:
    """The key columns ``rows`` has (a night written before faces has only the path)."""
    return [c for c in KEY if c in rows.columns]


def complete_paths(rows: pd.DataFrame) -> set[str]:
    """The paths whose rows are whole: a row for the image itself, or a row for each of
    faces 0..face_count-1."""
    if "face_count" not in rows.columns:
        return set(rows["path"])
    per_face = rows["face_count"].notna() & rows["face"].notna()
    whole = set(rows.loc[~per_face, "path"])
    faces = rows.loc[per_face, ["path", "face", "face_count"]].drop_duplicates(["path", "face"])
    found = faces.groupby("path").agg(n=("face", "size"), k=("face_count", "max"))
    return whole | set(found.index[found["n"] >= found["k"]])


def latest(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per key, the latest scored (``scored_at``; the later file on a tie)."""
    return rows.sort_values("scored_at", kind="stable").drop_duplicates(key_of(rows),
                                                                         keep="last")


def counts(table: pa.Table) -> dict[str, int]:
    """Over one bucket's rows (``path``, and ``face``, ``face_count`` where present):
    ``paths`` (distinct), ``duplicate_rows`` (rows of a key that has another row),
    ``face_rows`` (rows of one face) and ``incomplete`` (photos missing some of their faces'
    rows). Arrow throughout: a bucket of a 100M-image lake holds ~1.5M rows."""
    paths = pc.cast(table["path"], pa.string())
    out = {"paths": pc.count_distinct(paths).as_py(), "face_rows": 0, "incomplete": 0}
    if "face" not in table.column_names or table["face"].null_count == len(table):
        out["duplicate_rows"] = len(table) - out["paths"]
        return out
    face = table["face"]
    out["face_rows"] = len(table) - face.null_count
    key = pc.binary_join_element_wise(paths, pc.fill_null(pc.cast(face, pa.string()), ""),
                                      "\x00")
    out["duplicate_rows"] = len(table) - pc.count_distinct(key).as_py()
    if "face_count" in table.column_names and table["face_count"].null_count < len(table):
        per_face = table.filter(pc.is_valid(table["face_count"]))
        found = per_face.group_by("path").aggregate([("face", "count_distinct"),
                                                     ("face_count", "max")])
        out["incomplete"] = pc.sum(pc.less(found["face_count_distinct"],
                                           found["face_count_max"])).as_py() or 0
    return out
