"""A round's settings, where its outputs go, and the job config of each role."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from fiqa_core import storage
from fiqa_core.config import build_config, setting
from fiqa_core.errors import ConfigError
from fiqa_core.faces.templates import NAMES as FACE_TEMPLATES
from jobs.score import ScoreConfig
from jobs.train import TrainConfig, validate


@dataclass(frozen=True)
class RoundConfig:
    """A round: its inputs and output once, then job settings per role."""

    labels: str = setting(help="labeled table (CSV/Parquet: path, score)")
    unlabeled_a: str = setting(help="set A: image folder/prefix, glob or manifest")
    unlabeled_b: str = setting(help="set B: image folder/prefix, glob or manifest")
    output: str = setting(help="everything the round writes goes below this (path or URI)")
    test_labels: str | None = setting(None, "held-out labels; unset: test_fraction of labels")
    test_fraction: float = setting(0.1, "share of labels held out when test_labels is unset")
    seed: int = setting(42, "seed of the held-out split")
    images_root: str | None = setting(None, "relative label paths are under this; unset: the "
                                      "table's folder")
    truth: str | None = setting(None, "true labels of unlabeled images, for the report")
    title: str = setting("fiqa self-training round", "the report's title")
    teacher: dict = setting(factory=dict, help="fiqa train settings of T0 (and T1); preset "
                            "default teacher-swin-b")
    enhanced_teacher: dict = setting(factory=dict, help="T1: fiqa train settings on top of "
                                     "teacher")
    student: dict = setting(factory=dict, help="fiqa train settings of the student; preset "
                            "default student-edgenext-xxs")
    pseudo_label: dict = setting(factory=dict, help="fiqa pseudo-label settings (sets A and B)")
    faces: str = setting("none", "none: every image is a face crop; largest or all: the "
                         "labeled and unlabeled images are photos: the train roles default to "
                         "faces=largest, pseudo_label to this value, and every role takes "
                         "the face settings below (a role's own setting wins)",
                         choices=("none", "largest", "all"), omit_default=True)
    face_template: str = setting("model", "with faces: every role's alignment template",
                                 choices=FACE_TEMPLATES, omit_default=True)
    min_face: int = setting(16, "with faces: every role's smallest face (box short side, px)",
                            omit_default=True)
    face_threshold: float = setting(0.9, "with faces: every role's detector probability a "
                                    "face needs", omit_default=True)
    address: str | None = setting(None, "Ray cluster address; unset: RAY_ADDRESS, else a local "
                                  "Ray", operational=True)


def absolute_paths(cfg: RoundConfig) -> RoundConfig:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    names = ("labels", "unlabeled_a", "unlabeled_b", "output", "test_labels", "images_root",
             "truth")
    return replace(cfg, **{n: _absolute(getattr(cfg, n)) for n in names})


def _absolute(path: str | None) -> str | None:
    return path if path is None or "://" in path else os.path.abspath(path)


def layout(cfg: RoundConfig) -> dict[str, str]:
    """Where each of the round's outputs lives, below ``cfg.output``."""
    j = lambda *p: storage.join(cfg.output, *p)  # noqa: E731
    return {
        "train_labels": j("data", "train_labels.parquet"),
        "test_labels": j("data", "test_labels.parquet"),
        "teacher0": j("models", "teacher0"),
        "teacher1": j("models", "teacher1"),
        "student": j("models", "student"),
        "pseudo_a": j("pseudo", "a"),
        "pseudo_b": j("pseudo", "b"),
        "metrics": j("eval", "metrics.json"),
        "predictions": j("eval", "predictions"),
        "report": j("report", "report.md"),
        "stages": j("stages"),
    }


def role_settings(cfg: RoundConfig, role: str) -> dict:
    """A role's job settings as the round applies them (preset and face defaults, T1 on top
    of T0)."""
    faces = _face_defaults(cfg, role)
    if role == "teacher":
        return {"preset": "teacher-swin-b", **faces, **cfg.teacher}
    if role == "enhanced_teacher":
        return {**role_settings(cfg, "teacher"), **cfg.enhanced_teacher}
    if role == "student":
        return {"preset": "student-edgenext-xxs", **faces, **cfg.student}
    return {**faces, **cfg.pseudo_label}


def _face_defaults(cfg: RoundConfig, role: str) -> dict:
    """The round's ``faces`` as a role's defaults: a photo's largest face for training (a
    pseudo-label row written with faces=all is aligned by its own landmarks)."""
    face = {"face_template": cfg.face_template, "min_face": cfg.min_face,
            "face_threshold": cfg.face_threshold}
    if cfg.faces == "none":
        changed = [k for k, v in face.items() if v != _DEFAULTS[k]]
        if changed:
            raise ConfigError(f"{', '.join(changed)} set but faces=none: set the round's "
                              f"faces=largest or faces=all (the images are photos)")
        return {}
    return {"faces": cfg.faces if role == "pseudo_label" else "largest", **face}


_DEFAULTS = {f.name: f.default for f in fields(RoundConfig)}


def _refuse_wired(role: str, values: dict, wired: dict) -> None:
    for key in values:
        if key in wired:
            where = "address" if key == "address" else "labels, unlabeled_a/b or output"
            raise ConfigError(
                f"{role}.{key}: the round sets {key} itself; set the round's {where} instead"
            )


def train_job(cfg: RoundConfig, role: str, output: str, pseudo: list[str]) -> TrainConfig:
    """The ``fiqa train`` config of a role, with the paths the round wires, validated."""
    p = layout(cfg)
    wired = {"labels": p["train_labels"], "output": p[output],
             "pseudo_labels": [p[s] for s in pseudo], "images_root": None,
             "address": cfg.address}
    values = role_settings(cfg, role)
    _refuse_wired(role, values, wired)
    job = build_config(TrainConfig, {**values, **wired}, f"round {role}")
    validate(job)
    return job


def pseudo_label_job(cfg: RoundConfig, images: str, model: str, output: str) -> ScoreConfig:
    """The ``fiqa pseudo-label`` config of one unlabeled set."""
    p = layout(cfg)
    wired = {"input": getattr(cfg, images), "model": p[model], "output": p[output],
             "run_date": None, "address": cfg.address}
    values = role_settings(cfg, "pseudo_label")
    _refuse_wired("pseudo_label", values, wired)
    return build_config(ScoreConfig, {**values, **wired}, "round pseudo_label")
