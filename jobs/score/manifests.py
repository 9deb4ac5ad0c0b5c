"""Manifest inputs: a table of the lake's files instead of a listing.

Today: a ``.parquet`` file with a ``path`` column and, when present, ``size``/``mtime``/
``etag`` columns (the facts a listing records).
"""

from __future__ import annotations

import pandas as pd

from fiqa_core import storage
from fiqa_core.errors import ConfigError, NotFoundError

from .config import ScoreConfig
from .schema import FACTS


def is_manifest(cfg: ScoreConfig) -> bool:
    """Whether the input names a manifest rather than a folder, prefix or glob."""
    return cfg.input.lower().endswith((".parquet", ".pq"))


def read_manifest(cfg: ScoreConfig):
    """The manifest's files as a Ray dataset of ``path`` and the facts (nulls where absent)."""
    from jobs.ray_env import read_parquet

    if not storage.exists(cfg.input):
        raise NotFoundError(f"{cfg.input}: manifest not found")
    manifest = read_parquet(cfg.input)
    if "path" not in manifest.columns():
        raise ConfigError(f"{cfg.input}: manifest needs a 'path' column")
    return manifest.map_batches(_manifest_rows, batch_format="pandas")


def _manifest_rows(batch: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"path": batch["path"].astype(str)})
    for c in FACTS:
        out[c] = batch[c] if c in batch.columns else None
    return out
