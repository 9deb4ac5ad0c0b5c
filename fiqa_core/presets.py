"""Model presets: an architecture tied to the preprocessing it was trained with.

A preset name is all a job needs to build a model and feed it correctly, the way a
timm pretrained config carries input size, mean and std beside the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """A registered model recipe.

    Attributes:
        name: Registry name, e.g. ``student-edgenext-xxs``.
        builder: Returns the model given ``pretrained``; ImageNet weights for the backbone.
        image_size: Default square input size S (short side resized to S, then SxS crop).
        mean: Normalisation mean, RGB, on the 0..1 scale.
        std: Normalisation std, RGB.
        selection_metric: Validation metric used to keep the best epoch ("srcc" or "challenge").
        role: "teacher" or "student".
        description: One line for ``fiqa info``.
    """

    name: str
    builder: Callable[[bool], nn.Module] = field(repr=False)  # noqa: F821
    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    selection_metric: str = "srcc"
    role: str = "teacher"
    description: str = ""


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
        raise ValueError(
            f"unknown preset {name!r} (known presets: {', '.join(list_presets())})"
        ) from None


def _student(pretrained: bool) -> nn.Module:
    from .models import EdgeNeXtQuality  # torch and timm load only when a model is built

    return EdgeNeXtQuality(pretrained)


def _teacher(pretrained: bool) -> nn.Module:
    from .models import SwinQuality

    return SwinQuality(pretrained)


register_preset(
    Preset(
        name="student-edgenext-xxs",
        builder=_student,
        image_size=352,
        selection_metric="challenge",
        role="student",
        description="EdgeNeXt-XXS student, 1.18 M params, 0.49 GMACs at 352 px",
    )
)
register_preset(
    Preset(
        name="teacher-swin-b",
        builder=_teacher,
        image_size=448,
        selection_metric="srcc",
        role="teacher",
        description="Swin-B teacher, 86.9 M params, 61.9 GMACs at 448 px",
    )
)
