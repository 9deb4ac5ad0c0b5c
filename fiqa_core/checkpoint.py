"""Checkpoint directories: ``model.safetensors`` + ``config.json``, local or any fsspec URI.

``config.json`` is written last, so a directory holding it is a complete checkpoint; it
records the weights' SHA-256, which loading verifies. Loading needs nothing but the
directory: the preset and preprocessing in the config rebuild the model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata

from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import storage
from .calibration import Calibration
from .models import Preprocessing, create_model
from .weights import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, load_weights

FORMAT = "fiqa-checkpoint/1"


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
    def from_dict(cls, d: dict, source: str = "config.json") -> CheckpointConfig:
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: format {d.get('format')!r} is not {FORMAT!r}")
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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(
    model: nn.Module,
    uri: str,
    *,
    calibration: Calibration | None = None,
    metrics: dict | None = None,
    lineage: dict | None = None,
) -> CheckpointConfig:
    """Write ``model`` (built by :func:`create_model`) to the checkpoint directory ``uri``."""
    model = unwrap_model(model)
    if not hasattr(model, "preset"):
        raise ValueError("save_checkpoint needs a model built by fiqa_core.create_model")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save_safetensors(state, metadata={"preset": model.preset})
    sha = hashlib.sha256(blob).hexdigest()
    config = CheckpointConfig(
        id=f"{model.preset}-{sha[:12]}",
        preset=model.preset,
        preprocessing=model.preprocessing,
        calibration=calibration,
        metrics=dict(metrics or {}),
        lineage=dict(lineage or {}),
        weights_sha256=sha,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        fiqa_version=_version(),
    )
    storage.write_bytes(storage.join(uri, CHECKPOINT_WEIGHTS), blob)
    storage.write_bytes(
        storage.join(uri, CHECKPOINT_CONFIG), json.dumps(config.to_dict(), indent=2).encode()
    )
    return config


def read_checkpoint_config(uri: str) -> CheckpointConfig:
    path = storage.join(uri, CHECKPOINT_CONFIG)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{uri}: not a fiqa checkpoint ({CHECKPOINT_CONFIG} missing; an interrupted save "
            "writes it last, so the directory is incomplete)"
        )
    return CheckpointConfig.from_dict(json.loads(storage.read_bytes(path)), path)


def load_checkpoint(uri: str) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model from a checkpoint directory; verifies the weights' checksum."""
    config = read_checkpoint_config(uri)
    blob = storage.read_bytes(storage.join(uri, CHECKPOINT_WEIGHTS))
    sha = hashlib.sha256(blob).hexdigest()
    if config.weights_sha256 and sha != config.weights_sha256:
        raise ValueError(
            f"{uri}: {CHECKPOINT_WEIGHTS} checksum {sha[:12]} does not match config.json "
            f"({config.weights_sha256[:12]}); the checkpoint is corrupt or was half-overwritten"
        )
    model = create_model(config.preset, image_size=config.preprocessing.size)
    load_weights(model, load_safetensors(blob))
    model.preprocessing = config.preprocessing  # the config, not the preset, is authoritative
    return model, config


def _version() -> str:
    try:
        return metadata.version("fiqa")
    except metadata.PackageNotFoundError:
        return "unknown"
