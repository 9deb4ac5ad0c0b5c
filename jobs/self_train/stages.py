"""The round as one declarative list of stages, and its plan: settings, inputs, outputs, keys.

Each :class:`StageDef` says everything about a stage in one place: its name, the stages it
reads, a description, the job config it runs (if any), the settings that determine its
result, its inputs and outputs (names in :func:`~jobs.self_train.config.layout`) and its
runner. A stage's key hashes its settings and the keys of the stages it reads, so changing
one setting reruns exactly that stage and what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import fsspec

from fiqa_core.config import result_settings
from fiqa_core.errors import ConfigError

from .config import RoundConfig, absolute_paths, layout, pseudo_label_job, train_job

RUNNERS = "jobs.self_train.runners:"


@dataclass(frozen=True)
class StageDef:
    name: str
    depends: tuple[str, ...]
    description: str
    inputs: Callable[[RoundConfig, dict], dict]
    outputs: dict[str, str]  # record name -> layout name; all must exist to skip the stage
    runner: str  # "module:attr" (jobs.self_train.runners), imported when the stage runs
    job: Callable[[RoundConfig], object] | None = None  # TrainConfig / ScoreConfig
    settings: Callable[[RoundConfig, dict], dict] | None = None  # for stages without a job
    model: str | None = None  # the model a training stage makes, as the report names it
    needs: tuple[str, ...] = ()  # optional modules (fiqa_core.extras) the runner imports


def _holdout_settings(cfg: RoundConfig, p: dict) -> dict:
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {cfg.test_fraction}")
    return {
        "labels": cfg.labels,
        "labels_file": _file_facts(cfg.labels),
        "test_labels": cfg.test_labels,
        "test_labels_file": _file_facts(cfg.test_labels) if cfg.test_labels else None,
        "test_fraction": None if cfg.test_labels else cfg.test_fraction,
        "seed": cfg.seed,
        "images_root": cfg.images_root,
    }


STAGE_DEFS = (
    StageDef(
        "holdout", (), "split off the held-out test labels",
        inputs=lambda cfg, p: {"labels": cfg.labels, "test_labels": cfg.test_labels},
        outputs={"train_labels": "train_labels", "test_labels": "test_labels"},
        runner=RUNNERS + "holdout", settings=_holdout_settings,
    ),
    StageDef(
        "teacher0", ("holdout",), "train teacher T0 on the labels",
        inputs=lambda cfg, p: {"labels": p["train_labels"]},
        outputs={"checkpoint": "teacher0"}, runner=RUNNERS + "train", model="T0",
        job=lambda cfg: train_job(cfg, "teacher", "teacher0", []),
    ),
    StageDef(
        "pseudo_a", ("teacher0",), "T0 pseudo-labels set A",
        inputs=lambda cfg, p: {"images": cfg.unlabeled_a, "model": p["teacher0"]},
        outputs={"shards": "pseudo_a"}, runner=RUNNERS + "pseudo_label",
        job=lambda cfg: pseudo_label_job(cfg, "unlabeled_a", "teacher0", "pseudo_a"),
    ),
    StageDef(
        "teacher1", ("holdout", "pseudo_a"), "train the enhanced teacher T1 on labels + A",
        inputs=lambda cfg, p: {"labels": p["train_labels"], "pseudo_labels": [p["pseudo_a"]]},
        outputs={"checkpoint": "teacher1"}, runner=RUNNERS + "train", model="T1",
        job=lambda cfg: train_job(cfg, "enhanced_teacher", "teacher1", ["pseudo_a"]),
    ),
    StageDef(
        "pseudo_b", ("teacher1",), "T1 pseudo-labels set B",
        inputs=lambda cfg, p: {"images": cfg.unlabeled_b, "model": p["teacher1"]},
        outputs={"shards": "pseudo_b"}, runner=RUNNERS + "pseudo_label",
        job=lambda cfg: pseudo_label_job(cfg, "unlabeled_b", "teacher1", "pseudo_b"),
    ),
    StageDef(
        "student", ("holdout", "pseudo_a", "pseudo_b"), "train the student on labels + A + B",
        inputs=lambda cfg, p: {"labels": p["train_labels"],
                               "pseudo_labels": [p["pseudo_a"], p["pseudo_b"]]},
        outputs={"checkpoint": "student"}, runner=RUNNERS + "train", model="student",
        job=lambda cfg: train_job(cfg, "student", "student", ["pseudo_a", "pseudo_b"]),
    ),
    StageDef(
        "evaluate", ("holdout", "teacher0", "teacher1", "student"),
        "evaluate T0, T1 and the student on the held-out labels",
        inputs=lambda cfg, p: {"labels": p["test_labels"],
                               "models": [p[m] for m in MODELS]},
        outputs={"metrics": "metrics", "predictions": "predictions"},
        runner=RUNNERS + "evaluate", settings=lambda cfg, p: {"test_labels": p["test_labels"]},
        needs=("fvcore",),
    ),
    StageDef(
        "report", ("evaluate", "pseudo_a", "pseudo_b"), "write the round report",
        inputs=lambda cfg, p: {"metrics": p["metrics"],
                               "pseudo_labels": [p["pseudo_a"], p["pseudo_b"]]},
        outputs={"report": "report"}, runner=RUNNERS + "report",
        settings=lambda cfg, p: {"title": cfg.title, "truth": cfg.truth}, needs=("matplotlib",),
    ),
)
STAGES = tuple(s.name for s in STAGE_DEFS)
MODELS = tuple(s.name for s in STAGE_DEFS if s.model)


@dataclass(frozen=True)
class Stage:
    """One stage of one round: its definition, resolved for the round's config."""

    definition: StageDef
    key: str
    settings: dict
    inputs: dict
    outputs: dict  # name -> path
    job: object = None
    models: dict[str, str] = field(default_factory=dict)  # every model stage -> its label

    @property
    def name(self) -> str:
        return self.definition.name


def _file_facts(uri: str) -> dict:
    from fiqa_core.lake import facts

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"{uri}: labels table not found")
    return facts(fs.info(path))


def _key(settings: dict, upstream: list[str]) -> str:
    blob = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def stage_jobs(cfg: RoundConfig) -> dict:
    """The ``fiqa train`` / ``fiqa pseudo-label`` config of each job stage, validated."""
    return {d.name: d.job(cfg) for d in STAGE_DEFS if d.job is not None}


def plan_stages(cfg: RoundConfig) -> dict[str, Stage]:
    """Every stage's settings, inputs, outputs and key; all settings validated here."""
    p = layout(cfg)
    jobs = stage_jobs(cfg)
    models = {d.name: d.model for d in STAGE_DEFS if d.model}
    stages: dict[str, Stage] = {}
    for d in STAGE_DEFS:
        settings = result_settings(jobs[d.name]) if d.job else d.settings(cfg, p)
        key = _key(settings, [stages[u].key for u in d.depends])
        outputs = {name: p[where] for name, where in d.outputs.items()}
        stages[d.name] = Stage(d, key, settings, d.inputs(cfg, p), outputs, jobs.get(d.name),
                               models)
    return stages


def stage_keys(cfg: RoundConfig) -> dict[str, str]:
    return {name: s.key for name, s in plan_stages(absolute_paths(cfg)).items()}
