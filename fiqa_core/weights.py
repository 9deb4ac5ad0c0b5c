"""Loading weights into a model: fiqa checkpoints, safetensors files, reference checkpoints.

The reference code saved either a raw ``state_dict`` or ``{"model_state_dict": state_dict}``,
sometimes from a DDP-wrapped model (``module.`` prefixed keys). All of these load here,
always with ``torch.load(weights_only=True)`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import io

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from . import storage
from .checkpoint_config import CHECKPOINT_WEIGHTS
from .errors import InputError, NotFoundError


class WeightsMismatchError(InputError):
    """A state dict does not fit the model; the message lists the offending keys."""


def read_state_dict(source: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint dir, a .safetensors file or a .pt/.pth file.

    Args:
        source: Local path or fsspec URI.
    """
    source = str(source)
    if storage.isdir(source) or storage.exists(storage.join(source, CHECKPOINT_WEIGHTS)):
        return load_safetensors(storage.read_bytes(storage.join(source, CHECKPOINT_WEIGHTS)))
    if not storage.exists(source):
        raise NotFoundError(f"{source}: no such weights file or checkpoint directory")
    data = storage.read_bytes(source)
    if source.endswith(".safetensors"):
        return load_safetensors(data)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(
            f"{source}: not a loadable PyTorch state dict ({type(e).__name__}: {e}); "
            "expected a .safetensors file, a fiqa checkpoint directory, or a torch.save'd "
            "state_dict / {'model_state_dict': ...}"
        ) from e
    return unwrap_state_dict(obj, source)


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept both reference wrappings; strip DDP ``module.`` / compile ``_orig_mod.`` prefixes."""
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(
            f"{source}: expected a state_dict (name -> tensor) or {{'model_state_dict': ...}}, "
            f"got {type(obj).__name__}"
        )
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, source: str | dict[str, torch.Tensor]) -> nn.Module:
    """Load weights strictly; on mismatch raise :class:`WeightsMismatchError` naming the keys."""
    name = source if isinstance(source, str) else "state_dict"
    state = unwrap_state_dict(source, name) if isinstance(source, dict) else read_state_dict(source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise WeightsMismatchError(
            f"{name}: weights do not fit {type(model).__name__}: "
            + "; ".join(
                f"{label} ({len(keys)}): {_preview(keys)}"
                for label, keys in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("shape mismatches", wrong_shape),
                )
                if keys
            )
            + ". Is this checkpoint for another preset?"
        )
    model.load_state_dict(state, strict=True)
    return model


def _preview(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")
