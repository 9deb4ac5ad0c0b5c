"""The 4-parameter logistic that maps raw model outputs onto the label scale.

yhat = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))

It is fitted from a model's raw predictions on its TRAINING images to their labels
(the reference fitted on train+validation, leaking validation into pseudo-labels), and
it is also the fit under which PLCC and RMSE are reported, as IQA convention has it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError


def logistic4(x, b1, b2, b3, b4):
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / np.abs(b4), -500, 500)
    return b2 + (b1 - b2) / (1 + np.exp(z))


@dataclass(frozen=True)
class Calibration:
    """Fitted logistic parameters; serialisable with :meth:`to_dict`."""

    b1: float
    b2: float
    b3: float
    b4: float

    def __call__(self, raw) -> np.ndarray:
        return logistic4(raw, self.b1, self.b2, self.b3, self.b4)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(*(float(d[k]) for k in ("b1", "b2", "b3", "b4")))


def fit_logistic(raw, labels, maxfev: int = 20000) -> Calibration:
    """Least-squares fit of the 4-parameter logistic from ``raw`` predictions to ``labels``.

    Starts from the conventional guess (b1=max label, b2=min label, b3=mean prediction,
    b4=0.5); if that does not converge, retries with b4 scaled to the predictions' spread.

    Raises:
        ValueError: fewer than 4 finite pairs, or constant predictions (nothing to fit).
    """
    from scipy.optimize import OptimizeWarning, curve_fit  # only fitting needs scipy

    x = np.asarray(raw, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"predictions ({x.size}) and labels ({y.size}) differ in length")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 4:
        raise InputError(f"need at least 4 finite prediction/label pairs to fit, got {x.size}")
    if np.ptp(x) == 0:
        raise InputError("predictions are constant: the logistic cannot be fitted")
    guesses = [
        [y.max(), y.min(), x.mean(), 0.5],
        [y.max(), y.min(), x.mean(), float(np.std(x)) or 1.0],
    ]
    best, best_err = None, np.inf
    for p0 in guesses:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=maxfev)
        except RuntimeError:
            continue
        err = float(np.mean((logistic4(x, *params) - y) ** 2))
        if np.all(np.isfinite(params)) and err < best_err:
            best, best_err = params, err
    if best is None:
        raise InputError("the 4-parameter logistic fit did not converge")
    b1, b2, b3, b4 = (float(v) for v in best)
    return Calibration(b1, b2, b3, abs(b4))
