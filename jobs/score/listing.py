"""Listing the input: every file with its facts, tagged with its bucket, in Ray tasks.

The driver lists one level; each subfolder is listed recursively in its own Ray task, so a
lake of many prefixes is listed in parallel and no path list passes through the driver.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from fiqa_core.errors import NotFoundError
from fiqa_core.lake import bucket_of, is_image_path, list_top, list_under

from .config import ScoreConfig
from .manifests import is_manifest, read_manifest
from .schema import FACTS, LISTING_SCHEMA, arrow


def list_images(cfg: ScoreConfig):
    """All image files under the input, as a materialized dataset, and the count of all files."""
    import ray

    if is_manifest(cfg):
        listed = read_manifest(cfg)
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
    if n_files == 0:
        raise NotFoundError(f"{cfg.input}: no files found")
    images = listed.filter(expr=col("is_image")).drop_columns(["is_image"]).materialize()
    return images, n_files


def col(name: str):
    from ray.data.expressions import col

    return col(name)


def _tag_listing(batch: pd.DataFrame, buckets: int) -> pa.Table:
    paths = batch["path"].astype(str)
    return arrow(
        pd.DataFrame(
            {
                "path": paths,
                "size": pd.to_numeric(batch["size"]).astype("Int64"),
                "mtime": pd.to_numeric(batch["mtime"]).astype("float64"),
                "etag": batch["etag"].astype(object),
                "bucket": paths.map(lambda p: bucket_of(p, buckets)),
                "is_image": paths.map(is_image_path),
            }
        ),
        LISTING_SCHEMA,
    )
