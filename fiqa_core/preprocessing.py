"""How images are prepared for a model: plain data, no torch (a driver reads it from JSON)."""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# how a model's arithmetic may run (fiqa_core.engines.torch_engine.resolve_precision: auto)
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Preprocessing:
    """Short side -> ``size``, ``size`` x ``size`` crop, normalise with ``mean`` / ``std``."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]))


def check_image_size(size: int) -> int:
    """``size`` if the models accept it (a positive multiple of 32), else a ConfigError."""
    from .errors import ConfigError

    if size < 32 or size % 32:
        raise ConfigError(f"image_size must be a positive multiple of 32, got {size}")
    return int(size)
