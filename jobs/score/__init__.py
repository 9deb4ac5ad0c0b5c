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

Modules: ``config`` (settings, partition), ``listing``, ``planning`` (incremental: skip,
reuse, score), ``pipeline`` (decode tasks, scoring actors), ``summary``, ``job`` (the run).
"""

from .commit import MARKER
from .config import ScoreConfig, partition_uri
from .job import get_args_parser, main, run
from .summary import summarise

__all__ = ["MARKER", "ScoreConfig", "get_args_parser", "main", "partition_uri", "run",
           "summarise"]
