"""Evaluation metrics: SRCC, KRCC, and PLCC / RMSE after the 4-parameter logistic fit."""

from __future__ import annotations

import numpy as np
from scipy import stats

from .calibration import fit_logistic
from .errors import InputError


def srcc(pred, label) -> float:
    """Spearman rank correlation; 0 when either side is constant (undefined)."""
    if np.ptp(pred) == 0 or np.ptp(label) == 0:
        return 0.0
    return float(stats.spearmanr(pred, label).statistic)


def krcc(pred, label) -> float:
    """Kendall rank correlation; 0 when either side is constant (undefined)."""
    if np.ptp(pred) == 0 or np.ptp(label) == 0:
        return 0.0
    return float(stats.kendalltau(pred, label).statistic)


def evaluate(pred, label) -> dict[str, float]:
    """All challenge metrics for one set of predictions.

    PLCC and RMSE are computed after fitting the logistic from ``pred`` to ``label``
    (on this same data, as IQA papers report them). ``challenge`` = (SRCC + PLCC) / 2.
    """
    pred = np.asarray(pred, dtype=np.float64).ravel()
    label = np.asarray(label, dtype=np.float64).ravel()
    if pred.size != label.size:
        raise InputError(f"predictions ({pred.size}) and labels ({label.size}) differ in length")
    if pred.size < 4:
        raise InputError(f"need at least 4 predictions to evaluate, got {pred.size}")
    s, k = srcc(pred, label), krcc(pred, label)
    try:
        fitted = fit_logistic(pred, label)(pred)
    except ValueError:
        fitted = np.full_like(label, label.mean())  # constant predictions: no correlation
    p = float(stats.pearsonr(fitted, label).statistic) if np.ptp(fitted) and np.ptp(label) else 0.0
    rmse = float(np.sqrt(np.mean((fitted - label) ** 2)))
    return {
        "srcc": s,
        "plcc": p,
        "krcc": k,
        "rmse": rmse,
        "challenge": (s + p) / 2,
        "n": int(pred.size),
    }
