"""Training losses: MSE plus the batch PLCC loss used by the reference code."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def plcc_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Correlation loss over a batch.

    Standardise predictions and labels over the batch (population std), then average
    ``MSE(p, y) / 4`` and ``MSE(rho * p, y) / 4`` with ``rho = mean(p * y)``, the
    batch Pearson correlation. Zero when predictions are a positive affine map of labels.
    """
    pred, label = pred.float().flatten(), label.float().flatten()
    s_p, m_p = torch.std_mean(pred, unbiased=False)
    s_y, m_y = torch.std_mean(label, unbiased=False)
    p = (pred - m_p) / (s_p + _EPS)
    y = (label - m_y) / (s_y + _EPS)
    loss0 = F.mse_loss(p, y) / 4
    rho = torch.mean(p * y)
    loss1 = F.mse_loss(rho * p, y) / 4
    return (loss0 + loss1) / 2


def quality_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The training objective of every stage: MSE(pred, label) + PLCC loss."""
    return F.mse_loss(pred.float().flatten(), label.float().flatten()) + plcc_loss(pred, label)
