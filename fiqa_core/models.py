"""Paper-exact architectures and the single ``create_model`` entry point.

Module and attribute names mirror the reference code, so a reference checkpoint's keys
load without renaming (see :mod:`fiqa_core.weights`).
"""

from __future__ import annotations

import timm
import torch
import torchvision
from torch import nn

from .preprocessing import Preprocessing, check_image_size
from .presets import Preset, get_preset

__all__ = ["EdgeNeXtQuality", "Preprocessing", "SwinQuality", "create_model"]


def _quality_head(in_features: int) -> nn.Sequential:
    # Two linears with no activation between them, as in the reference code.
    return nn.Sequential(nn.Linear(in_features, 128), nn.Linear(128, 1))


class EdgeNeXtQuality(nn.Module):
    """Student: timm ``edgenext_xx_small`` without its head (no final norm), GAP, 168->128->1."""

    def __init__(self, pretrained: bool = False):
        super().__init__()
        backbone = _pretrained_guard(
            "edgenext_xx_small (timm, Hugging Face hub 'timm/edgenext_xx_small.in1k')",
            lambda: timm.create_model("edgenext_xx_small", pretrained=pretrained),
        )
        backbone.head = nn.Identity()  # the whole head goes, its LayerNorm2d included
        self.feature_extraction = backbone
        self.quality = _quality_head(backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.feature_extraction(x)  # (B, 168, H/32, W/32), un-normed
        return self.quality(features.mean(dim=(2, 3))).squeeze(1)


class _SwinFeatures(nn.Module):
    """The reference's inner IQA model: torchvision swin_b whose head is the identity."""

    def __init__(self, pretrained: bool):
        super().__init__()
        weights = torchvision.models.Swin_B_Weights.IMAGENET1K_V1 if pretrained else None
        swin = _pretrained_guard(
            f"swin_b (torchvision, {torchvision.models.Swin_B_Weights.IMAGENET1K_V1.url})",
            lambda: torchvision.models.swin_b(weights=weights),
        )
        swin.head = nn.Identity()
        self.feature_extraction = swin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extraction(x)  # normed, pooled (B, 1024)


class SwinQuality(nn.Module):
    """Teacher: torchvision ``swin_b`` without its head, then 1024->128->1."""

    def __init__(self, pretrained: bool = False):
        super().__init__()
        self.feature_extraction = _SwinFeatures(pretrained)
        self.quality = _quality_head(1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quality(self.feature_extraction(x)).squeeze(1)


def _pretrained_guard(what: str, build):
    try:
        return build()
    except Exception as e:  # network, hub and cache errors all surface here
        raise RuntimeError(
            f"could not load the ImageNet weights of {what}: {type(e).__name__}: {e}. "
            "Offline? Put the file in the library's cache (TORCH_HOME for torchvision, "
            "HF_HOME for timm), or build with pretrained=False and pass weights=<path or URI>."
        ) from e


def create_model(
    preset: str | Preset,
    pretrained: bool = False,
    weights: str | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """Build a model from a preset.

    Args:
        preset: Preset name (see :func:`fiqa_core.list_presets`) or a :class:`Preset`.
        pretrained: Initialise the backbone from the library's ImageNet weights.
        weights: A fiqa checkpoint directory, a ``.safetensors`` file or a reference
            ``.pt``/``.pth`` state dict, as a local path or any fsspec URI.
        image_size: Input size S, overriding the preset's (e.g. 288, or small sizes in tests).

    Returns:
        The model in eval mode, with ``model.preset`` and ``model.preprocessing`` set.
    """
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    check_image_size(int(image_size or p.image_size))
    model = p.build(pretrained)
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights)
    model.preset = p.name
    model.preprocessing = p.preprocessing(image_size)
    return model.eval()
