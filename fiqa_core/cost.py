"""Model cost as the challenge counts it: parameters and multiply-accumulates (fvcore)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch

# The challenge limit for the deployed model.
MAX_GMACS = 0.5
MAX_PARAMS_M = 5.0


@dataclass(frozen=True)
class ModelCost:
    preset: str
    image_size: int
    params: int
    gmacs: float

    @property
    def within_challenge_limit(self) -> bool:
        return self.gmacs <= MAX_GMACS and self.params <= MAX_PARAMS_M * 1e6


def model_cost(preset: str, image_size: int | None = None) -> ModelCost:
    """Count parameters and GMACs for one image at ``image_size`` (default: the preset's).

    Uses fvcore's FlopCountAnalysis, which counts one multiply-accumulate as one "flop",
    the unit of the challenge's 0.5 GFLOPs limit.
    """
    from .extras import require
    from .models import create_model

    require("fvcore")
    model = create_model(preset, image_size=image_size)
    size = model.preprocessing.size
    params = sum(p.numel() for p in model.parameters())
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore traces with torch.jit
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, size, size))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        macs = analysis.total()
    return ModelCost(preset=model.preset, image_size=size, params=params, gmacs=macs / 1e9)
