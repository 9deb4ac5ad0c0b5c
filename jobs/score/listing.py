"""Listing the input: every file with its facts, tagged with its bucket, in Ray tasks.

The driver lists the input's folders breadth-first until there are ``listing_tasks`` of
them (unset: 4 per cluster CPU), so that a lake of one or two top-level prefixes is listed
by as many tasks as one of hundreds; an object-store folder is a key range that splits
itself past 10 pages (10,000 keys), so a flat prefix of millions of keys is listed in
parallel too (:mod:`fiqa_core.lake`, :mod:`fiqa_core.keyranges`); ``listing_tasks=1``: no
fan-out, one listing task at a time. Each task returns its rows as one Arrow table (bucket
and is_image computed there, column by column) that stays in Ray's object store: no path
list passes through the driver, only the files the driver met on its way down (in blocks
of 32 rows or more: a first run decodes a block in one task).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from fiqa_core.errors import NotFoundError
from fiqa_core.lake import (
    FILES_SCHEMA,
    Budget,
    buckets_of,
    image_mask,
    list_parts,
    plan_listing,
    task_groups,
)

from .config import ScoreConfig
from .manifests import is_manifest, read_manifest
from .schema import LISTING_SCHEMA

log = logging.getLogger("fiqa.score")
IMAGES_SCHEMA = pa.schema([f for f in LISTING_SCHEMA if f.name != "is_image"])
TASKS_PER_CPU = 4
BLOCK_ROWS = 32  # the decode stage's batch


@dataclass
class Listing:
    """A listing's image rows (a materialized dataset of :data:`IMAGES_SCHEMA`) and how it
    went: files of every kind, listing tasks run, parts (folders, key ranges) listed."""

    images: object
    files: int
    tasks: int = 0
    parts: int = 0
    driver_files: int = 0
    seconds: float = 0.0


def list_images(cfg: ScoreConfig):
    """All image files under the input, as a materialized dataset, and the count of all files."""
    if is_manifest(cfg):
        listing = _list_manifest(cfg)
    else:
        listing = list_lake(cfg.input, cfg.buckets, listing_budget(cfg.listing_tasks))
        log.info("listed %d files in %.1f s: %d on the driver, %d parts in %d tasks",
                 listing.files, listing.seconds, listing.driver_files, listing.parts,
                 listing.tasks)
    if listing.files == 0:
        raise NotFoundError(f"{cfg.input}: no files found")
    return listing.images, listing.files


def listing_budget(tasks: int | None, **kwargs) -> Budget:
    """The listing's fan-out: ``tasks`` (unset: 4 per CPU of the cluster)."""
    if tasks is None:
        from jobs.ray_env import cluster_resources

        tasks = TASKS_PER_CPU * max(1, int(cluster_resources().get("CPU", 1)))
    if tasks <= 1:  # no fan-out: each prefix paged from start to end, never by StartAfter
        kwargs.setdefault("pages", None)
    return Budget(tasks=max(1, tasks), **kwargs)


def list_lake(uri: str, buckets: int, budget: Budget) -> Listing:
    """Every file under a folder, prefix or glob, listed by Ray tasks as ``budget`` says."""
    import ray

    start = time.perf_counter()
    found, parts = plan_listing(uri, budget)
    driver = _tag_listing(found, buckets)
    tables = [ray.put(block) for block in _blocks(_images(driver), budget)]
    listing = Listing(None, driver.num_rows, driver_files=driver.num_rows)
    task = ray.remote(_list_task).options(num_returns=2)
    pending = {}

    def submit(parts: list) -> None:
        for group in task_groups(parts, budget):
            rows, facts = task.remote(uri, group, budget, buckets)
            pending[facts] = rows
            listing.tasks += 1
            listing.parts += len(group)

    submit(parts)
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        rows, (files, images, rest) = pending.pop(done), ray.get(done)
        listing.files += files
        if images:
            tables.append(rows)
        submit(rest)
    listing.images = (ray.data.from_arrow_refs(tables) if tables
                      else ray.data.from_arrow(IMAGES_SCHEMA.empty_table()))
    listing.seconds = time.perf_counter() - start
    return listing


def _list_task(uri: str, parts: list, budget: Budget, buckets: int):
    """A listing task: its image rows (an Arrow table, left in the object store), and
    (files, images, parts left) for the driver."""
    found, rest = list_parts(uri, parts, budget)
    images = _images(_tag_listing(found, buckets))
    return images, (found.num_rows, images.num_rows, rest)


def _blocks(rows: pa.Table, budget: Budget) -> list[pa.Table]:
    """The driver's rows in up to ``2 * budget.tasks`` blocks of 32 rows or more: a first
    run decodes a block in one task, so a small lake listed on the driver is not one task's."""
    size = max(BLOCK_ROWS, -(-rows.num_rows // (2 * budget.tasks)))
    return [rows.slice(i, size) for i in range(0, rows.num_rows, size)]


def _images(tagged: pa.Table) -> pa.Table:
    return tagged.filter(tagged["is_image"]).drop_columns(["is_image"])


def _list_manifest(cfg: ScoreConfig) -> Listing:
    listed = read_manifest(cfg).map_batches(
        _tag_listing, fn_kwargs={"buckets": cfg.buckets}, batch_format="pyarrow"
    ).materialize()
    images = listed.filter(expr=col("is_image")).drop_columns(["is_image"]).materialize()
    return Listing(images, listed.count())


def col(name: str):
    from ray.data.expressions import col

    return col(name)


def _tag_listing(files: pa.Table, buckets: int) -> pa.Table:
    """Files (:data:`fiqa_core.lake.FILES_SCHEMA`) with their bucket and whether they are
    images: :data:`LISTING_SCHEMA`."""
    files = files.select(FILES_SCHEMA.names).cast(FILES_SCHEMA)
    paths = files["path"].combine_chunks()
    columns = {c: files[c] for c in FILES_SCHEMA.names}
    columns["bucket"] = pa.array(buckets_of(paths.to_pylist(), buckets), pa.int64())
    columns["is_image"] = pc.fill_null(image_mask(paths), False)
    return pa.table(columns, schema=LISTING_SCHEMA)
