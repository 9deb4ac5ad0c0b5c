"""Framework-free training steps; the Ray Train job calls these per batch.

Predictions (validation, calibration) go through :class:`fiqa_core.Scorer`, the same code
that scores a lake.
"""

from __future__ import annotations

import torch
from torch import nn

from .engines.torch_engine import autocast, model_inputs
from .losses import quality_loss
from .preprocessing import Preprocessing


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer, step_epochs: int, gamma: float):
    """StepLR stepped once per epoch."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_epochs, gamma=gamma)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    pixels,
    scores,
    pre: Preprocessing,
    device: torch.device,
    amp: bool = True,
) -> torch.Tensor:
    """One optimisation step on a uint8 NHWC batch; returns the detached loss.

    The loss stays on the device: reading it every step would stall an accelerator.
    """
    x = model_inputs(pixels, pre, device)
    y = torch.as_tensor(scores, dtype=torch.float32).to(device, non_blocking=True)
    with autocast(device, amp and device.type == "cuda"):  # training on a CPU stays fp32
        pred = model(x)
    loss = quality_loss(pred.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def selection_score(metrics: dict, selection_metric: str) -> float:
    """The number a preset keeps its best epoch by: SRCC, or (SRCC + PLCC) / 2."""
    if selection_metric == "srcc":
        return metrics["srcc"]
    if selection_metric == "challenge":
        return metrics["challenge"]
    raise ValueError(f"unknown selection metric {selection_metric!r}")


__all__ = ["build_optimizer", "build_scheduler", "selection_score", "train_step"]
