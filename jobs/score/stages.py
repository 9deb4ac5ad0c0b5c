"""The score pipeline as one declarative list of stages, and the pipeline id of its rows.

Each :class:`ScoreStage` is one ``map_batches`` with its own resources: read bytes ->
decode/prepare (CPU tasks; Ray fuses the two, their resources being equal) -> score (an
actor pool holding the model). An optional stage (a face detector, say) is one more entry,
with an ``enabled`` rule and an ``identity``: the settings that change its output. Every
row carries the **pipeline id**, a hash of the identities of the stages that ran (the
model's id, its preprocessing, any optional stage's own id and settings); what a night
reuses and what a partition may hold key on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from fiqa_core.checkpoint_config import CheckpointConfig
from fiqa_core.extras import named
from fiqa_core.images import DEFAULT_MAX_PIXELS

from .actor import ACTOR_BATCH, FAULT_MARKER, default_scorers
from .config import ScoreConfig
from .pipeline import decode_task_memory
from .worker_warnings import forwarding_warnings

RESIZE = "short side to S, bilinear antialiased (as PIL), centre crop S x S"


@dataclass(frozen=True)
class Context:
    """What the stages of one run read: its settings and the driver's engine decisions."""

    cfg: ScoreConfig
    decisions: object  # fiqa_core.engines.Decisions
    run_stamp: str
    pipeline: str
    die_after: int | None = None
    counter: object = None  # the progress counter's actor handle (jobs.score.progress)


@dataclass(frozen=True)
class ScoreStage:
    """One stage of the score pipeline.

    Attributes:
        name: For logs and the pipeline id.
        description: One line.
        fn: ``module:attribute``: a batch function (run in tasks) or, with ``actor``, a
            class (an actor pool; its instances keep state such as a loaded model).
        kwargs: The function's keyword arguments (a class's constructor's) for a run.
        resources: ``map_batches`` arguments for a run: ``batch_size``, ``num_cpus``,
            ``num_gpus``, ``memory``, and the pool's ``size`` for an actor stage.
        identity: What in this stage changes a score: its part of the pipeline id
            (None: nothing, e.g. reading bytes).
        enabled: Whether the stage runs in this run.
        batch_format: The batch format ``fn`` takes.
        actor: ``fn`` is a class run by an actor pool (whose constructor takes the
            run's ``counter`` and forwards its warnings: :mod:`jobs.score.worker_warnings`).
    """

    name: str
    description: str
    fn: str
    kwargs: Callable[[Context], dict]
    resources: Callable[[Context], dict]
    identity: Callable[[ScoreConfig, CheckpointConfig], dict] | None = None
    enabled: Callable[[ScoreConfig], bool] = lambda cfg: True
    batch_format: str = "pandas"
    actor: bool = False


def _task_resources(ctx: Context) -> dict:
    # A read + decode task reserves the memory it holds (full-size decodes, its batch's
    # bytes and crops), and one CPU, so the scorers keep theirs. Resources that differ
    # from the scoring actors' also keep Ray from fusing decoding into them, where it would
    # run one batch at a time instead of on every CPU.
    size = ctx.decisions.config.preprocessing.size
    return {"batch_size": ctx.cfg.decode_batch_size, "num_cpus": 1,
            "memory": decode_task_memory(ctx.cfg, size)}


# the detector (onnxruntime) and the photos held decoded (up to 16 MP, or one larger photo)
FACE_TASK_MEMORY = 400 * 2**20


def _face_task_resources(ctx: Context) -> dict:
    resources = _task_resources(ctx)
    if ctx.decisions.defer_decode:  # the scoring actors detect: the task only reads
        return resources
    return {**resources, "memory": resources["memory"] + FACE_TASK_MEMORY}


def face_stage_settings(cfg) -> dict:
    """The face stage's settings (a ScoreConfig's, or fiqa faces' FacesConfig's)."""
    return {"template": cfg.face_template, "threshold": cfg.face_threshold,
            "min_face": cfg.min_face, "mode": cfg.faces}


def _detector_identity(cfg: ScoreConfig) -> dict:
    from fiqa_core.faces.detect import DetectSettings

    return DetectSettings(threshold=cfg.face_threshold, min_face=cfg.min_face).identity()


def _actor_kwargs(ctx: Context) -> dict:
    d, cfg = ctx.decisions, ctx.cfg
    import ray

    from fiqa_core import storage

    # a converted model goes to the actors through Ray's object store, once: as a
    # constructor argument its bytes would be copied into the spec (Ray keys it by repr)
    return {
        "load": d.engine.load,
        "model": ray.put(d.converted) if d.converted is not None else d.model,
        "options": d.load_options(cfg.batch_size, cfg.max_pixels, cfg.compile),
        "model_id": d.config.id,
        "pipeline": ctx.pipeline,
        "scored_at": ctx.run_stamp,
        "die_after": ctx.die_after,
        "fault_marker": storage.join(cfg.output, FAULT_MARKER),
        "counter": ctx.counter,
        # photos deferred to the actors by the face stage: detected and aligned there
        "faces": face_stage_settings(cfg) if cfg.faces != "none" and d.defer_decode else None,
    }


def _actor_resources(ctx: Context) -> dict:
    d, cfg = ctx.decisions, ctx.cfg
    return {"batch_size": max(ACTOR_BATCH, cfg.batch_size or 0), "num_cpus": cfg.scorer_cpus,
            "num_gpus": 1 if d.use_gpu else 0,
            "size": cfg.scorers or default_scorers(d.use_gpu)}


SCORE_STAGES: tuple[ScoreStage, ...] = (
    ScoreStage(
        "read", "read each image's bytes (concurrent reads, the store's retries)",
        fn="jobs.score.pipeline:read_batch",
        kwargs=lambda ctx: {"threads": ctx.cfg.read_threads},
        resources=_task_resources, batch_format="pyarrow",
    ),
    ScoreStage(
        "decode", "decode, resize and centre-crop (or pass a JPEG on to the device)",
        fn="jobs.score.pipeline:decode_batch",
        kwargs=lambda ctx: {"size": ctx.decisions.config.preprocessing.size,
                            "draft": ctx.cfg.draft, "max_pixels": ctx.cfg.max_pixels,
                            "defer_jpeg": ctx.decisions.defer_decode},
        resources=_task_resources, batch_format="pyarrow",
        identity=lambda cfg, model: {"size": model.preprocessing.size, "resize": RESIZE,
                                     "draft": cfg.draft, "max_pixels": cfg.max_pixels},
        enabled=lambda cfg: cfg.faces == "none",
    ),
    ScoreStage(
        "faces", "decode each photo, detect its faces (RetinaFace), align the largest (or "
        "each, faces=all) to face_template, resize and centre-crop (or pass the photo on "
        "to the scoring actor's device)",
        fn="jobs.score.faces_stage:faces_batch",
        kwargs=lambda ctx: {"size": ctx.decisions.config.preprocessing.size,
                            "max_pixels": ctx.cfg.max_pixels,
                            "face": face_stage_settings(ctx.cfg),
                            "defer": ctx.decisions.defer_decode},
        resources=_face_task_resources,
        batch_format="pyarrow",
        identity=lambda cfg, model: {"size": model.preprocessing.size, "resize": RESIZE,
                                     "max_pixels": cfg.max_pixels, "faces": cfg.faces,
                                     "template": cfg.face_template, **_detector_identity(cfg)},
        enabled=lambda cfg: cfg.faces != "none",
    ),
    ScoreStage(
        "score", "score prepared pixels with the model (actor pool)",
        fn="jobs.score.actor:ScoreActor",
        kwargs=_actor_kwargs,
        resources=_actor_resources,
        identity=lambda cfg, model: {"model": model.id, "calibration": (
            model.calibration.to_dict() if model.calibration else None)},
        batch_format="numpy", actor=True,
    ),
)


def pipeline_id(cfg: ScoreConfig, model: CheckpointConfig,
                stages: tuple[ScoreStage, ...] = SCORE_STAGES) -> str:
    """The hash of every enabled stage's identity: rows of one pipeline id are scores of
    the same images by the same means."""
    parts = [[s.name, s.identity(cfg, model)] for s in stages
             if s.identity is not None and s.enabled(cfg)]
    blob = json.dumps(parts, sort_keys=True, default=str)
    return "pl-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


BASE_STAGES = ("read", "decode", "score")  # what ran before rows carried a pipeline id


def legacy_pipeline_id(cfg: ScoreConfig, model: CheckpointConfig, model_id: str) -> str:
    """The pipeline id of rows written before rows carried one (keyed on their model id
    alone): the default base pipeline with model ``model_id``. What a night reuses from an
    older night; a partition's own rows and its ``_SUCCESS`` are checked by model id."""
    defaults = replace(cfg, draft=False, max_pixels=DEFAULT_MAX_PIXELS)
    base = tuple(s for s in SCORE_STAGES if s.name in BASE_STAGES)
    return pipeline_id(defaults, replace(model, id=model_id), base)


def build(ds, ctx: Context, stages: tuple[ScoreStage, ...] = SCORE_STAGES):
    """``ds`` through every enabled stage, in order."""
    import ray

    enabled = [s for s in stages if s.enabled(ctx.cfg)]
    print("fiqa: stages: " + " -> ".join(f"{s.name} ({s.description})" for s in enabled),
          flush=True)
    for stage in enabled:
        resources = dict(stage.resources(ctx))
        kwargs = stage.kwargs(ctx)
        if stage.actor:
            pool = ray.data.ActorPoolStrategy(size=resources.pop("size"))
            ds = ds.map_batches(named(stage.fn), fn_constructor_kwargs=kwargs, compute=pool,
                                batch_format=stage.batch_format, **resources)
        else:  # its workers' warnings counted for the run (an actor forwards its own)
            ds = ds.map_batches(forwarding_warnings(named(stage.fn), ctx.counter),
                                fn_kwargs=kwargs, batch_format=stage.batch_format,
                                **resources)
    return ds
