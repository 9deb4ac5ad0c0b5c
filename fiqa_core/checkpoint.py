"""Checkpoint directories: ``model.safetensors`` + ``config.json``, local or any fsspec URI.

``config.json`` is written last, so a directory holding it is a complete checkpoint; it
records the weights' SHA-256, which loading verifies. Loading needs nothing but the
directory: the preset and preprocessing in the config rebuild the model.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import storage
from .calibration import Calibration
from .checkpoint_config import (
    CHECKPOINT_WEIGHTS,
    CheckpointConfig,
    read_checkpoint_config,
    write_checkpoint_config,
)
from .errors import InputError
from .extras import installed_version
from .models import create_model
from .weights import load_weights

__all__ = ["CheckpointConfig", "load_checkpoint", "read_checkpoint_config", "save_checkpoint"]

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
        fiqa_version=installed_version("fiqa") or "unknown",
    )
    storage.write_bytes(storage.join(uri, CHECKPOINT_WEIGHTS), blob)
    write_checkpoint_config(uri, config)
    return config


def load_checkpoint(uri: str) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model from a checkpoint directory; verifies the weights' checksum."""
    config = read_checkpoint_config(uri)
    blob = storage.read_bytes(storage.join(uri, CHECKPOINT_WEIGHTS))
    sha = hashlib.sha256(blob).hexdigest()
    if config.weights_sha256 and sha != config.weights_sha256:
        raise InputError(
            f"{uri}: {CHECKPOINT_WEIGHTS} checksum {sha[:12]} does not match config.json "
            f"({config.weights_sha256[:12]}); the checkpoint is corrupt or was half-overwritten"
        )
    model = create_model(config.preset, image_size=config.preprocessing.size)
    load_weights(model, load_safetensors(blob))
    model.preprocessing = config.preprocessing  # the config, not the preset, is authoritative
    return model, config

