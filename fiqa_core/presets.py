"""Model presets: an architecture tied to the preprocessing it was trained with, as data.

A preset name is all a job needs to build a model and feed it correctly, the way a timm
pretrained config carries input size, mean and std beside the weights. The builder is
named (``module:attribute``) and imported only when a model is built, so reading presets
costs no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError
from .extras import named
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@dataclass(frozen=True)
class Preset:
    """A registered model recipe.

    Attributes:
        name: Registry name, e.g. ``student-edgenext-xxs``.
        builder: ``module:callable`` that returns the model given ``pretrained`` (a callable
            also works, at the price of importing its module when the preset is registered).
        image_size: Default square input size S (short side resized to S, then SxS crop).
        mean: Normalisation mean, RGB, on the 0..1 scale.
        std: Normalisation std, RGB.
        selection_metric: Validation metric used to keep the best epoch ("srcc" or "challenge").
        role: "teacher" or "student".
        description: One line for ``fiqa info``.
    """

    name: str
    builder: str | Callable = field(repr=False)
    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    selection_metric: str = "srcc"
    role: str = "teacher"
    description: str = ""

    def preprocessing(self, image_size: int | None = None) -> Preprocessing:
        return Preprocessing(size=int(image_size or self.image_size), mean=self.mean, std=self.std)

    def build(self, pretrained: bool):
        """The untrained (or ImageNet-initialised) model; imports torch and the builder."""
        if callable(self.builder):
            return self.builder(pretrained)
        return named(self.builder)(pretrained)


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    return preset


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r} (known presets: {', '.join(list_presets())})"
        ) from None


# name, builder, default input size; what picks the best epoch, role, one line for fiqa info
register_preset(Preset("student-edgenext-xxs", "fiqa_core.models:EdgeNeXtQuality", 352,
                       selection_metric="challenge", role="student",
                       description="EdgeNeXt-XXS student, 1.18 M params, 0.49 GMACs at 352 px"))
register_preset(Preset("teacher-swin-b", "fiqa_core.models:SwinQuality", 448,
                       selection_metric="srcc", role="teacher",
                       description="Swin-B teacher, 86.9 M params, 61.9 GMACs at 448 px"))
