"""Settings of a scoring or pseudo-labeling run, and where its output partition is."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar

from fiqa_core import storage
from fiqa_core.config import setting
from fiqa_core.engines.registry import list_engines
from fiqa_core.errors import ConfigError
from fiqa_core.faces.templates import NAMES as FACE_TEMPLATES
from fiqa_core.images import DEFAULT_MAX_PIXELS
from fiqa_core.preprocessing import PRECISIONS

ABOUT = """``fiqa pseudo-label`` and ``fiqa score``: one Ray Data pipeline over an image lake.

    fiqa score input=s3://lake/faces/ model=s3://models/student output=s3://scores/faces
    fiqa pseudo-label input=s3://lake/set-a/ model=s3://models/t0 output=s3://pl/a

list (in Ray tasks: folders split breadth-first, object-store prefixes by key range, until
there are listing_tasks; or read from a manifest or an S3 Inventory report, a task per
file) -> plan per path bucket (skip what is done, carry forward what is unchanged) -> read
+ decode + resize + crop (CPU tasks) -> score (actor pool, model loaded once per actor) ->
Parquet, partitioned by bucket. One row per image file, always: bad images are rows with a
status, never dropped.

``fiqa score`` writes ``<output>/date=YYYY-MM-DD/`` and reuses the scores of images whose
pipeline (model and settings) and file facts (size, mtime, etag) are unchanged since the
latest complete date;
``fiqa pseudo-label`` writes ``<output>/`` directly. Both are resumable: a rerun scores only
the rows missing from the output, and ``_SUCCESS`` (with counts) is written last."""


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of a scoring or pseudo-labeling run."""

    RETIRED_SETTINGS: ClassVar[dict[str, str]] = {
        "fail_after_batches": "fault injection is a test hook now (jobs.faults); remove it",
    }
    input: str = setting(help="images: a folder or prefix, a glob, a manifest (.parquet, or "
                         ".csv with a header) with a 'path' column, or an S3 Inventory "
                         "report's manifest.json or its folder (local or s3://, gs://)")
    model: str = setting(help="checkpoint directory, or a fiqa export .onnx file (local or URI)")
    output: str = setting(help="output folder (local or URI); fiqa score writes "
                          "<output>/date=YYYY-MM-DD/ below it")
    manifest_columns: str | None = setting(None, "a manifest's columns, as fact=column "
                                           "pairs: path=uri,size=bytes,mtime=modified,"
                                           "etag=md5 (mtime: seconds or ISO 8601); unset: "
                                           "columns named path, size, mtime, etag",
                                           operational=True)
    run_date: str | None = setting(None, "fiqa score: the date partition YYYY-MM-DD; "
                                   "unset: today (UTC)")
    keep_nights: int | None = setting(None, "fiqa score: after a night commits, remove the "
                                      "committed date= partitions older than the newest "
                                      "keep_nights (the night just written always kept); "
                                      "unset: keep every night", operational=True)
    progress_s: float = setting(30.0, "seconds between fiqa's progress lines while scoring "
                                "(images done of the total, rate, ETA, failures); 0: none",
                                operational=True)
    verbose: bool = setting(False, "also show Ray Data's own progress and INFO lines (every "
                            "10 s, several lines per stage)", operational=True)
    report: bool = setting(True, "after the run commits, write _report.html and "
                           "_report.json beside _SUCCESS (fiqa report: what they show)",
                           operational=True)
    report_threshold: float | None = setting(None, "the report's quality threshold: the "
                                             "share of scores below it is tracked",
                                             operational=True)
    buckets: int = setting(64, "output partitions by a stable hash of the path; keep it fixed "
                           "across runs (a change rescores everything)")
    batch_size: int | None = setting(None, "images per forward pass; unset: 8 on a CPU (a "
                                     "batch that fits its caches runs fastest there; 1 on "
                                     "the onnx engine), 64 on a GPU", operational=True)
    listing_tasks: int | None = setting(None, "listing tasks to aim for: the driver lists "
                                        "folders breadth-first until there are this many, "
                                        "and an object-store prefix splits into key ranges "
                                        "past 10,000 keys; unset: 4 per cluster CPU; 1: no "
                                        "fan-out, one listing task at a time",
                                        operational=True)
    decode_batch_size: int = setting(32, "images per decode task", operational=True)
    read_threads: int = setting(16, "concurrent object reads per decode task", operational=True)
    decode_task_mb: int | None = setting(None, "memory a decode task reserves; unset: an "
                                         "estimate for 4 MP photos from read_threads and "
                                         "decode_batch_size", operational=True)
    write_batch_mb: float = setting(64.0, "result rows gathered (in memory, ~230 B a row) per "
                                    "write task, each of which writes at most one file per "
                                    "bucket: larger means fewer, larger files; an interrupted "
                                    "run redoes the rows of its unwritten batch",
                                    operational=True)
    engine: str | None = setting(None, "what runs the model, a registered engine: torch, "
                                 "or onnx (ONNX Runtime, fp32; a checkpoint directory is "
                                 "exported once per run by the driver, an .onnx file from "
                                 "fiqa export is run as it is); unset: onnx for an .onnx "
                                 "model, else torch. Scores agree to 1e-4, so like "
                                 "precision it does not change stage keys",
                                 operational=True, choices=list_engines)
    precision: str = setting("auto", "model arithmetic: auto (bf16 where the hardware computes "
                             "it natively: CUDA GPUs, CPUs with AVX-512 BF16 or AMX; else "
                             "fp32), fp32 or bf16. An engine choice like use_gpu: scores agree "
                             "in rank order (SRCC >= 0.999), so it does not change stage keys",
                             operational=True, choices=PRECISIONS)
    scorers: int | None = setting(None, "scoring actors; unset: one per GPU, else one "
                                  "per core for 3/4 of the cluster's cores (the rest decode)",
                                  operational=True)
    scorer_cpus: float = setting(1.0, "CPUs reserved per scoring actor; the other CPUs run "
                                 "decode tasks, one decode at a time each", operational=True)
    scorer_threads: int | None = setting(None, "threads of a scoring actor on CPUs (torch's "
                                         "or ONNX Runtime's); "
                                         "unset: its reserved CPUs rounded up (1 by default: "
                                         "one thread per actor uses a core best)",
                                         operational=True)
    use_gpu: bool | None = setting(None, "score on GPUs; unset: when the cluster has them",
                                   operational=True)
    compile: bool = setting(False, "torch.compile the model once per scoring actor (the "
                            "compile time is logged; it pays off on long jobs: the student "
                            "on 2 CPU cores compiled in 40 s, then ran 1.3-1.5x faster)",
                            operational=True)
    device_decode: bool | None = setting(None, "decode JPEGs in the scoring actors, in "
                                         "batches on their device (nvJPEG on a GPU; other "
                                         "formats and unusual JPEGs stay in decode tasks); "
                                         "unset: on GPUs; off with draft", operational=True)
    draft: bool = setting(False, "reduced-scale JPEG decoding: faster on large photos, "
                          "slightly different pixels")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "images with more pixels are refused "
                              "(status too_large)")
    faces: str = setting("none", "none: each image is the face (a crop); largest: detect "
                         "faces in each photo (RetinaFace, the faces extra) and score the "
                         "largest, aligned to face_template (status no_face when there is "
                         "none); all: a row per face (face 0..face_count-1, largest first)",
                         choices=("none", "largest", "all"), omit_default=True)
    face_template: str = setting("model", "with faces: the alignment's template: ffhq512 "
                                 "(as pyiqa), ofiq616 (OFIQ), arcface112, or model (FFHQ's "
                                 "geometry at the model's input size); the crop then takes "
                                 "the model's preprocessing", choices=FACE_TEMPLATES,
                                 omit_default=True)
    min_face: int = setting(16, "with faces: smaller faces (box short side, pixels) are "
                            "ignored", omit_default=True)
    face_threshold: float = setting(0.9, "with faces: the detector's face probability a face "
                                    "needs", omit_default=True)
    address: str | None = setting(None, "Ray cluster address; unset: RAY_ADDRESS, else a local "
                                  "Ray", operational=True)


def check(cfg: ScoreConfig) -> None:
    counts = (cfg.buckets, cfg.batch_size or 1, cfg.decode_batch_size, cfg.scorer_threads or 1)
    if min(counts) < 1 or cfg.write_batch_mb <= 0 or cfg.scorer_cpus <= 0 or (
            cfg.keep_nights is not None and cfg.keep_nights < 1):
        raise ConfigError(
            "buckets, batch_size, decode_batch_size, scorer_threads and keep_nights must be "
            ">= 1, write_batch_mb and scorer_cpus > 0"
        )
    from fiqa_core.engines import check_run

    check_run(cfg)  # the engine, the settings it takes, its extras


def partition_uri(cfg: ScoreConfig, nightly: bool) -> str:
    """Where this run writes: ``<output>/date=YYYY-MM-DD`` (nightly) or ``<output>``."""
    if not nightly:
        return cfg.output
    date = cfg.run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise ConfigError(f"run_date must be YYYY-MM-DD, got {date!r}") from None
    return storage.join(cfg.output, f"date={date}")
