"""The torch engine: prepared images -> raw and calibrated scores, with statuses.

:class:`Scorer` serves every caller that runs a model on images in PyTorch: the library
user, the Ray scoring actors, ``fiqa evaluate`` and the training loop's validation and
calibration predictions, so the numbers that pick a training run's best epoch come from the
same code that scores the lake. What it shares with the onnx engine (decoding, statuses,
rows) is :class:`fiqa_core.engines.base.ScorerBase`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..calibration import Calibration
from ..checkpoint import load_checkpoint
from ..errors import ConfigError
from ..images import DEFAULT_MAX_PIXELS
from ..preprocessing import PRECISIONS, Preprocessing
from .base import ScorerBase


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:  # not Linux: ask PyTorch's own CPU probe
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(probe and probe())


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when unset: 8 on a CPU, where a batch's activations then fit
    in its caches (the student at 352 px in bf16 on 2 cores: 144 images/s at 8 against 110
    at 32, bench/RESULTS.md), 64 on an accelerator."""
    return 8 if device.type == "cpu" else 64


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """``("bf16" | "fp32", why)`` for a requested precision on ``device``.

    ``auto`` takes bf16 where the hardware computes it natively: any CUDA GPU, or a CPU with
    AVX-512 BF16 / AMX (about twice the fp32 rate there, with scores of the same rank order:
    SRCC >= 0.999, tested); fp32 elsewhere, where emulated bf16 would be slower.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, "as set"
    if device.type == "cuda":
        return "bf16", "auto: a CUDA GPU"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16", "auto: the CPU has AVX-512 BF16 / AMX"
    return "fp32", f"auto: no native bf16 on {device.type}"


def normalize_batch(batch, mean, std, device=None, channels_last: bool = False):
    """uint8 NHWC (numpy or torch) -> normalised float32 NCHW tensor on ``device``.

    Normalising after the transfer moves 4x fewer bytes to an accelerator.
    """
    x = torch.as_tensor(batch)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - m).div_(s)
    return x.contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def model_inputs(pixels, pre: Preprocessing, device: torch.device) -> torch.Tensor:
    """uint8 NHWC pixels -> the normalised NCHW tensor the model takes (channels_last on CUDA)."""
    return normalize_batch(
        pixels, pre.mean, pre.std, device=device, channels_last=device.type == "cuda"
    )


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on ``device`` when ``enabled``; float32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Scorer(ScorerBase):
    """Scores images with one model in PyTorch: raw output and calibrated (label-scale) score.

    The forward pass runs in bf16 autocast or float32 (``precision``; ``auto`` takes bf16
    where the hardware computes it natively, see :func:`resolve_precision`), with
    channels_last tensors on CUDA. Images go through the model's own preprocessing
    (``model.preprocessing``): nothing about sizes or normalisation is hard-coded here.

    Decoding, statuses and the ``score`` / ``score_decoded`` / ``score_prepared`` columns
    are :class:`~fiqa_core.engines.base.ScorerBase`'s, shared with the ONNX Runtime engine.

    Args:
        model: A model built by :func:`fiqa_core.create_model` or loaded from a checkpoint.
        calibration: Maps raw outputs to the label scale; None leaves ``score`` = raw.
        device: Torch device; defaults to CUDA when available.
        batch_size: Images per forward pass; None: :func:`default_batch_size` for the device.
        model_id: Identifier written beside every score (a checkpoint's ``id``).
        max_pixels: Refuse images with more pixels than this (``too_large``).
        precision: ``auto``, ``fp32`` or ``bf16``; the choice is in ``self.precision``.
        compile: ``torch.compile`` the model; every forward batch is padded to
            ``batch_size`` so it compiles once. The first batch pays the compile time
            (``self.compile_seconds`` once known).
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: Calibration | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        model_id: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        precision: str = "auto",
        compile: bool = False,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.preprocessing = model.preprocessing
        self.calibration = calibration
        self.batch_size = batch_size or default_batch_size(self.device)
        self.model_id = model_id or getattr(model, "preset", "model")
        self.max_pixels = max_pixels
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.engine = "torch"
        self.compile_seconds: float | None = None
        if compile:
            self.model = torch.compile(self.model)

    @classmethod
    def from_checkpoint(
        cls, uri: str, device: str | torch.device | None = None, **kwargs
    ) -> Scorer:
        """Load a checkpoint directory (local path or URI) and score with its calibration."""
        model, config = load_checkpoint(uri)
        return cls(model, config.calibration, device=device, model_id=config.id, **kwargs)

    @torch.inference_mode()
    def score_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw model outputs for a uint8 NHWC batch of prepared (S x S) images, all usable."""
        out = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start : start + self.batch_size]
            n = len(chunk)
            if self.compiled and n < self.batch_size:  # one shape (and layout): one compilation
                pad = (self.batch_size - n, *chunk.shape[1:])
                chunk = (torch.cat([chunk, chunk.new_zeros(pad)]) if torch.is_tensor(chunk)
                         else np.concatenate([chunk, np.zeros(pad, dtype=chunk.dtype)]))
            x = model_inputs(chunk, self.preprocessing, self.device)
            t0 = time.perf_counter()
            with autocast(self.device, self.precision == "bf16"):
                y = self.model(x)[:n]
            if self.compiled and self.compile_seconds is None:
                self.compile_seconds = time.perf_counter() - t0
            out.append(y.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def load(model: str, device: str | None = None, batch_size: int | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None,
         source: str | None = None, precision: str = "auto", compile: bool = False) -> Scorer:
    """The torch engine's ``load`` (:class:`fiqa_core.engines.Engine`): a checkpoint
    directory. ``threads`` on a CPU sets this process's torch threads (Ray pins an actor's
    torch to its CPUs rounded down; a scoring actor sets the CPUs it reserved instead)."""
    if threads and torch.device(device or default_device()).type == "cpu":
        torch.set_num_threads(int(threads))
    return Scorer.from_checkpoint(model, device=device, batch_size=batch_size,
                                  max_pixels=max_pixels, precision=precision, compile=compile)
