"""Batched scoring with a trained model, in any Python process (Ray actors wrap this)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .calibration import Calibration
from .checkpoint import load_checkpoint
from .images import DEFAULT_MAX_PIXELS, OK, Decoded, normalize_batch, prepare_image


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Scorer:
    """Scores images with one model: raw output and calibrated (label-scale) score.

    On CUDA the forward pass runs under bf16 autocast with channels_last tensors; on the
    CPU in float32. Images go through the model's own preprocessing
    (``model.preprocessing``): nothing about sizes or normalisation is hard-coded here.

    Args:
        model: A model built by :func:`fiqa_core.create_model` or loaded from a checkpoint.
        calibration: Maps raw outputs to the label scale; None leaves ``score`` = raw.
        device: Torch device; defaults to CUDA when available.
        batch_size: Images per forward pass.
        model_id: Identifier written beside every score (a checkpoint's ``id``).
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: Calibration | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        model_id: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.preprocessing = model.preprocessing
        self.calibration = calibration
        self.batch_size = batch_size
        self.model_id = model_id or getattr(model, "preset", "model")
        self.max_pixels = max_pixels
        self.on_cuda = self.device.type == "cuda"
        self.model = model.eval().to(self.device)
        if self.on_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(
        cls, uri: str, device: str | torch.device | None = None, **kwargs
    ) -> Scorer:
        """Load a checkpoint directory (local path or URI) and score with its calibration."""
        model, config = load_checkpoint(uri)
        return cls(model, config.calibration, device=device, model_id=config.id, **kwargs)

    def prepare(self, item: bytes | np.ndarray, draft: bool = False) -> Decoded:
        """Decode + resize + centre-crop one image (CPU work; never raises for bad data)."""
        return prepare_image(item, self.preprocessing.size, max_pixels=self.max_pixels, draft=draft)

    @torch.inference_mode()
    def score_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw model outputs for a uint8 NHWC batch of prepared (S x S) images."""
        out = []
        for start in range(0, len(pixels), self.batch_size):
            x = normalize_batch(
                pixels[start : start + self.batch_size],
                self.preprocessing.mean,
                self.preprocessing.std,
                device=self.device,
                channels_last=self.on_cuda,
            )
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_cuda):
                y = self.model(x)
            out.append(y.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return self.calibration(raw) if self.calibration is not None else np.asarray(raw)

    def score(self, items: Sequence[bytes | np.ndarray]) -> dict[str, np.ndarray]:
        """Score encoded images (bytes) or decoded HxWx3 uint8 arrays.

        Returns:
            Columns, one entry per input in order: ``raw_score`` and ``score`` (NaN where
            the image was refused), ``status`` and ``error`` (see :mod:`fiqa_core.images`).
        """
        decoded = [self.prepare(item) for item in items]
        good = [i for i, d in enumerate(decoded) if d.status == OK]
        raw = np.full(len(items), np.nan)
        if good:
            raw[good] = self.score_pixels(np.stack([decoded[i].image for i in good]))
        return {
            "raw_score": raw,
            "score": self.calibrate(raw),
            "status": np.array([d.status for d in decoded], dtype=object),
            "error": np.array([d.error for d in decoded], dtype=object),
        }
