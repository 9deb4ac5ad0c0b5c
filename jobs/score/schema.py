"""The Arrow schemas of the scoring pipeline: listing, plan and output rows."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

FACTS = ("size", "mtime", "etag")
FACE_COLUMNS = ("face", "face_count", "face_score", "face_box", "face_landmarks")

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
OUTPUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("score", pa.float64()),
        ("raw_score", pa.float64()),
        ("model", pa.string()),
        ("pipeline", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        # with faces= (null without): which face (0: the largest), how many faces the
        # photo has (faces=all: its rows), the detector's confidence, the face's box
        # (x1, y1, x2, y2) and 5 landmarks (x, y pairs) in the photo
        ("face", pa.int64()),
        ("face_count", pa.int64()),
        ("face_score", pa.float64()),
        ("face_box", pa.list_(pa.float64())),
        ("face_landmarks", pa.list_(pa.float64())),
        ("reused", pa.bool_()),
        ("scored_at", pa.string()),
        ("bucket", pa.int64()),
    ]
)
# a Parquet file of a bucket= folder: its rows without the bucket, which its folder names
FILE_SCHEMA = pa.schema([f for f in OUTPUT_SCHEMA if f.name != "bucket"])
ROW_GROUP_ROWS = 100_000  # ~18 MB of result rows: one row group for most files
# a row to score, as the plan hands it to the pipeline: the listed file and its bucket
PLAN_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                         ("etag", pa.string()), ("bucket", pa.int64())])
# what a reused row carries over from the previous partition
CARRIED = ("score", "raw_score", "model", "pipeline", "status", "error", "width", "height",
           *FACE_COLUMNS, "scored_at")


def arrow(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """One explicit schema for every block (Ray cannot combine mixed or all-null types).

    Missing columns and values (None, NaN) become nulls: a refused image has a null score.
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
