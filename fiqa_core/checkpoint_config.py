"""A checkpoint's ``config.json``: what a model is and how to feed it, readable without torch.

A scoring driver, a round planner or a notebook reads this to learn a model's id, preset,
preprocessing and calibration; only whoever runs the model loads the weights
(:mod:`fiqa_core.checkpoint`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import storage
from .calibration import Calibration
from .errors import InputError, NotFoundError
from .preprocessing import Preprocessing

FORMAT = "fiqa-checkpoint/1"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"


@dataclass(frozen=True)
class CheckpointConfig:
    """What ``config.json`` holds.

    Attributes:
        id: ``<preset>-<first 12 hex of the weights' SHA-256>``; the ``model`` column of scores.
        preset: Preset name.
        preprocessing: Input size and normalisation the model was trained with.
        calibration: Logistic from raw outputs to the label scale (fitted on training data).
        metrics: Validation metrics at save time.
        lineage: Which labels and shards trained it, config hash, epoch, etc.
        weights_sha256: Checksum of ``model.safetensors``.
        created: UTC timestamp (ISO 8601).
        fiqa_version: Package version that wrote it.
    """

    id: str
    preset: str
    preprocessing: Preprocessing
    calibration: Calibration | None = None
    metrics: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    weights_sha256: str = ""
    created: str = ""
    fiqa_version: str = ""

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "id": self.id,
            "preset": self.preset,
            "preprocessing": self.preprocessing.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "weights_sha256": self.weights_sha256,
            "created": self.created,
            "fiqa_version": self.fiqa_version,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = CHECKPOINT_CONFIG) -> CheckpointConfig:
        if d.get("format") != FORMAT:
            raise InputError(f"{source}: format {d.get('format')!r} is not {FORMAT!r}")
        cal = d.get("calibration")
        return cls(
            id=d["id"],
            preset=d["preset"],
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            calibration=Calibration.from_dict(cal) if cal else None,
            metrics=d.get("metrics") or {},
            lineage=d.get("lineage") or {},
            weights_sha256=d.get("weights_sha256", ""),
            created=d.get("created", ""),
            fiqa_version=d.get("fiqa_version", ""),
        )


def read_checkpoint_config(uri: str) -> CheckpointConfig:
    """The config of checkpoint directory ``uri`` (local path or URI); imports no torch."""
    path = storage.join(uri, CHECKPOINT_CONFIG)
    if not storage.exists(path):
        raise NotFoundError(
            f"{uri}: not a fiqa checkpoint ({CHECKPOINT_CONFIG} missing; an interrupted save "
            "writes it last, so the directory is incomplete)"
        )
    return CheckpointConfig.from_dict(json.loads(storage.read_bytes(path)), path)


def write_checkpoint_config(uri: str, config: CheckpointConfig) -> None:
    """Write ``config.json`` into checkpoint directory ``uri`` (the last file of a save)."""
    data = json.dumps(config.to_dict(), indent=2).encode()
    storage.write_bytes(storage.join(uri, CHECKPOINT_CONFIG), data)
