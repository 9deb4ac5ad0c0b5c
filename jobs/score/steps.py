"""A scoring run's first two steps: plan (engine decisions, listing, the night before, what
to score and what to reuse) and execute (the pipeline's stages, then the Parquet write)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, replace
from functools import partial

from fiqa_core import storage
from fiqa_core.checkpoint_config import CheckpointConfig
from fiqa_core.errors import NotFoundError
from fiqa_core.lake import IMAGE_EXTENSIONS
from jobs import faults

from .commit import own_files, previous_partition
from .config import ScoreConfig
from .listing import list_images
from .planning import buckets_of, check_pipelines, plan
from .reading import drop_all_carried
from .schema import ROW_GROUP_ROWS
from .stages import Context, build, legacy_pipeline_id, pipeline_id

log = logging.getLogger("fiqa.score")


@dataclass(frozen=True)
class Planned:
    """What the plan step decided: the stages' context, the listing and the plan's rows."""

    ctx: Context
    listing: object  # ray.data.Dataset of listed images
    files_listed: int
    images: int
    previous: str | None
    previous_damaged: list
    to_score: object  # the rows carried forward are written by the plan step already
    seconds: dict  # each step's wall time so far: listing, planning

    def facts(self, t0: float) -> dict:
        """The run's own facts for ``_SUCCESS``."""
        cfg, model = self.ctx.cfg, self.ctx.decisions.config
        return {"input": cfg.input, "model": model.id, "pipeline": self.ctx.pipeline,
                "faces": cfg.faces,  # all: the rows are faces (face_rows of them)
                # what rows written before rows carried a pipeline id were, for this model
                # (the report compares such a night by it)
                "default_pipeline": legacy_pipeline_id(cfg, model, model.id),
                "engine": self.ctx.decisions.engine.name,
                # where faces were detected: in CPU tasks, or by the scoring actors on
                # their device (device_decode)
                "face_detection": None if cfg.faces == "none" else (
                    f"scoring actors ({self.ctx.decisions.device}, torch)"
                    if self.ctx.decisions.defer_decode else "cpu tasks (onnxruntime)"),
                "files_listed": self.files_listed, "images": self.images,
                "skipped_non_image": self.files_listed - self.images,
                "seconds": round(time.time() - t0, 1), "buckets": cfg.buckets,
                "run_started": self.ctx.run_stamp, "previous": self.previous,
                "previous_damaged": self.previous_damaged,
                "step_seconds": {k: round(v, 1) for k, v in self.seconds.items()}}


def plan_run(cfg: ScoreConfig, nightly: bool, model: CheckpointConfig, out: str,
             t0: float) -> Planned:
    from fiqa_core.engines import preflight
    from jobs.ray_env import cluster_cores, cluster_resources, init_ray, ray_data_progress

    if cfg.faces != "none":  # the detector's weights, checked before any work
        from fiqa_core.faces.weights import onnx_bytes

        onnx_bytes()
    init_ray(cfg.address, min_cpus=2)
    ray_data_progress(cfg.verbose)
    decisions = preflight(cfg, cluster_resources(), model)
    for note in decisions.notes:
        log.warning(note)
    pipeline = pipeline_id(cfg, model)
    legacy = partial(legacy_pipeline_id, cfg, model)
    t_list = time.time()
    listing, n_files = list_images(cfg)
    images = listing.count()
    if images == 0:  # a night of nothing would commit an empty partition to plan from
        raise NotFoundError(f"{cfg.input}: no image files among its {n_files} files "
                            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    seconds = {"start": t_list - t0, "listing": time.time() - t_list}
    print(f"fiqa: listed {n_files} files, {images} images ({time.time() - t0:.0f} s)", flush=True)
    t_plan = time.time()
    files, removed = own_files(out)  # this run's own partition, under its lease
    if removed:
        log.warning("%s: removed %d temporary file(s) of an interrupted write", out, removed)
    if drop_all_carried(out, files):  # carried again below, against this listing
        log.info("%s: an interrupted attempt's carried rows are planned again", out)
    check_pipelines(out, pipeline, model.id)
    previous, damaged = previous_partition(cfg.output, out) if nightly else (None, [])
    if previous and buckets_of(previous) != cfg.buckets:
        log.warning("%s used %s buckets, not %d: rescoring everything", previous,
                    buckets_of(previous), cfg.buckets)
        previous = None
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    planned = plan(listing, out, previous, pipeline, cfg.buckets, legacy,
                   tasks=2 * cluster_cores(), rows=images)
    seconds["planning"] = time.time() - t_plan
    print(f"fiqa: planned what to score and reuse ({time.time() - t0:.0f} s)", flush=True)
    ctx = Context(cfg, decisions, stamp, pipeline, faults.armed("score_actor_dies_after_batches"))
    return Planned(
        ctx, listing, n_files, images, previous, damaged,
        to_score=planned,
        seconds=seconds,
    )


def _materialized(ds) -> bool:
    from ray.data.dataset import MaterializedDataset

    return isinstance(ds, MaterializedDataset)


def execute(planned: Planned, out: str) -> dict[str, int]:
    """Every stage over the rows to score, then their rows to Parquet; the warnings raised
    in the stages' workers, with their counts."""
    if _materialized(planned.to_score) and planned.to_score.count() == 0:
        log.info("nothing to score: every image is done or carried forward from the night "
                 "before")  # no scoring actors to start
        return {}
    import ray

    from .progress import Counter, Reporter

    cfg = planned.ctx.cfg
    counter = ray.remote(num_cpus=0)(Counter).remote()
    scored = build(planned.to_score, replace(planned.ctx, counter=counter))
    # a first night's plan is not materialized: then every listed image is to score
    total = planned.to_score.count() if _materialized(planned.to_score) else planned.images
    # result rows are gathered into large write tasks: each writes at most one file per
    # bucket, so a lake's scores land in a few large files instead of one per block
    # (min_bytes_per_file is experimental in Ray 2.60; min_rows_per_file with partition
    # columns is deprecated, and a repartition by bucket would hold every row to the end).
    # row_group_size makes Arrow gather each file's rows into large row groups: without it
    # every 64-row block became a row group (247 in a 381-row file), whose metadata bloated
    # the files 9x and held the write task's memory at 1.1 GB for 100k rows
    fs, path = storage.arrow_filesystem(out)  # each file published whole or not at all
    reporter = Reporter(lambda: ray.get(counter.read.remote(), timeout=30), lambda: total,
                        cfg.progress_s, out=lambda text: print(text, flush=True))
    try:
        with reporter:
            scored.write_parquet(
                path,
                filesystem=fs,
                partition_cols=["bucket"],
                min_bytes_per_file=max(1, int(cfg.write_batch_mb * 2**20)),
                row_group_size=ROW_GROUP_ROWS,
            )
    finally:
        ray.kill(counter)
    return reporter.warnings
