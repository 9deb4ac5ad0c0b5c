"""What a row of a partition stands for: an image (``faces=none`` or ``largest``, and any
image without a face or that could not be read), or one face of a photo (``faces=all``:
``face`` 0..k-1, each row saying ``face_count`` k). Planning, verify, repair and the
summary key rows on (path, face) and ask whether an image's rows are whole: a photo's face
rows may land in different files (the scorer batches rows, not photos), so a run stopped
between two writes leaves some of them, and the photo is scored again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KEY = ("path", "face")  # a row's identity: its image, and its face (null: the image itself)
KEY_COLUMNS = ("path", "face", "face_count", "scored_at")  # what the questions below read


def key_of(rows: pd.DataFrame) -> list[str]:
    """The key columns ``rows`` has (a night written before faces has only the path)."""
    return [c for c in KEY if c in rows.columns]


def _numbers(rows: pd.DataFrame, name: str) -> pd.Series:
    """A face column as numbers (all null where a night written before faces lacks it)."""
    return pd.to_numeric(rows[name]) if name in rows.columns else pd.Series(
        np.nan, index=rows.index)


def _attempts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (path, scored_at), one attempt's rows of an image: ``whole`` when they are one
    row for the image itself (no ``face_count``: faces none or largest, no face, a bad
    file), or exactly faces 0..k-1, each saying ``face_count`` k. Attempts of one photo
    may disagree (detection differs with a batch's padding), so they are never mixed."""
    frame = pd.DataFrame({"path": rows["path"], "scored_at": rows["scored_at"],
                          "face": _numbers(rows, "face"), "k": _numbers(rows, "face_count")})
    g = frame.groupby(["path", "scored_at"], dropna=False, sort=False).agg(
        rows=("path", "size"), with_k=("k", "count"), k_min=("k", "min"), k_max=("k", "max"),
        faces=("face", "nunique"), f_min=("face", "min"), f_max=("face", "max"))
    image = g["with_k"] == 0
    faces = ((g["with_k"] == g["rows"]) & (g["k_min"] == g["k_max"]) & (g["faces"] == g["k_max"])
             & (g["f_min"] == 0) & (g["f_max"] == g["k_max"] - 1))
    return g.assign(whole=image | faces).reset_index()


def kept(rows: pd.DataFrame) -> pd.DataFrame:
    """What repair keeps: per path, its newest whole attempt, one row per key (the later
    file on a tie); a path without a whole attempt keeps its rows (one per key), and
    verify then finds it incomplete: the next run scores it again."""
    if not len(rows):
        return rows
    attempts = _attempts(rows)
    newest = (attempts[attempts["whole"]].sort_values("scored_at", kind="stable")
              .drop_duplicates("path", keep="last")[["path", "scored_at"]])
    mine = rows.merge(newest.rename(columns={"scored_at": "_kept"}), on="path", how="left")
    keep = mine["_kept"].isna().to_numpy() | (mine["scored_at"] == mine["_kept"]).to_numpy()
    out = rows[keep]
    # one row per image, or per face of a faces=all photo
    key = _numbers(out, "face").where(_numbers(out, "face_count").notna(), -1).fillna(-2)
    return (out.assign(_key=key.to_numpy()).sort_values("scored_at", kind="stable")
            .drop_duplicates(["path", "_key"], keep="last").drop(columns="_key"))


def complete_paths(rows: pd.DataFrame) -> set[str]:
    """The paths with a whole attempt (:func:`_attempts`): done; any other rows of theirs
    are repair's to drop."""
    if not len(rows) or "face_count" not in rows.columns or rows["face_count"].isna().all():
        return set(rows["path"])  # one row per image (a night written before faces too)
    attempts = _attempts(rows)
    return set(attempts.loc[attempts["whole"], "path"])


def counts(table: pa.Table) -> dict[str, int]:
    """Over one bucket's rows (``path``, and ``face``, ``face_count``, ``scored_at`` where
    present): ``paths`` (distinct), ``duplicate_rows`` (rows repair would drop:
    :func:`kept`), ``face_rows`` (rows of one face) and ``incomplete`` (photos without a
    whole attempt). In Arrow unless the rows are faces=all's (a bucket of a 100M-image
    lake holds ~1.5M rows)."""
    paths = pc.cast(table["path"], pa.string())
    out = {"paths": pc.count_distinct(paths).as_py(), "face_rows": 0, "incomplete": 0}
    names = table.column_names
    if "face_count" in names and table["face_count"].null_count < len(table):
        rows = table.to_pandas()
        out["face_rows"] = int(rows["face"].notna().sum())
        out["duplicate_rows"] = len(rows) - len(kept(rows))
        out["incomplete"] = out["paths"] - len(complete_paths(rows))
        return out
    # one row per image (faces none or largest): any second row of a path is one too many
    out["face_rows"] = len(table) - table["face"].null_count if "face" in names else 0
    out["duplicate_rows"] = len(table) - out["paths"]
    return out
