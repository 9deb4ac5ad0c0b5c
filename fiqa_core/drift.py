"""Score distributions summarised in bounded memory, and how two of them differ.

A night is millions of scores: :class:`ScoreSummary` takes them file by file and keeps the
exact count, mean and share below a threshold, plus a uniform sample of at most ``cap``
scores (each score's random key drawn from a seeded generator; the ``cap`` smallest keys
kept, so files can come in any order and sizes). Quantiles, histograms and the population
stability index come from the samples: exact while a night has at most ``cap`` scores,
else within a fraction of a percentile.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SAMPLE_CAP = 200_000  # 3.2 MB of keys and scores per night


class UniformSample:
    """At most ``cap`` rows (of ``width`` values) drawn uniformly from all rows added:
    each row gets a random key (seeded), the ``cap`` smallest keys are kept."""

    def __init__(self, width: int = 1, cap: int = SAMPLE_CAP, seed: int = 0):
        self.cap, self.count = cap, 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._rows = np.empty((0, width))

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if not len(rows):
            return
        rows = rows.reshape(len(rows), -1)
        self.count += len(rows)
        keys = np.concatenate([self._keys, self._rng.random(len(rows))])
        rows = np.concatenate([self._rows, rows])
        if len(keys) > self.cap:
            keep = np.argpartition(keys, self.cap - 1)[:self.cap]
            keys, rows = keys[keep], rows[keep]
        self._keys, self._rows = keys, rows

    @property
    def rows(self) -> np.ndarray:
        return self._rows

    @property
    def exact(self) -> bool:
        """Whether the sample holds every row added."""
        return self.count == len(self._rows)


@dataclass
class ScoreSummary:
    """Scores streamed in batches (:meth:`add`): exact count, mean and share below the
    threshold; quantiles from a bounded uniform sample."""

    threshold: float | None = None
    cap: int = SAMPLE_CAP
    seed: int = 0
    count: int = 0
    total: float = 0.0
    below: int = 0
    _sample: UniformSample = field(init=False, repr=False)

    def __post_init__(self):
        self._sample = UniformSample(1, self.cap, self.seed)

    def add(self, scores) -> None:
        x = np.asarray(scores, dtype=np.float64)
        x = x[np.isfinite(x)]
        self.count += len(x)
        self.total += float(x.sum())
        if self.threshold is not None:
            self.below += int((x < self.threshold).sum())
        self._sample.add(x)

    @property
    def sample(self) -> np.ndarray:
        return np.sort(self._sample.rows[:, 0])

    @property
    def exact(self) -> bool:
        return self._sample.exact

    def figures(self) -> dict:
        """count, mean, quantiles (``p5`` ... ``p95``), min/max of the sample, the share
        below the threshold, whether the quantiles are from a sample; None where there
        are no scores."""
        s = self.sample
        if not len(s):
            return {"count": 0, "mean": None, "quantiles": None, "below_threshold": None}
        return {
            "count": self.count,
            "mean": self.total / self.count,
            "quantiles": {f"p{round(q * 100)}": float(np.quantile(s, q)) for q in QUANTILES},
            "min": float(s[0]), "max": float(s[-1]),
            "below_threshold": (self.below / self.count) if self.threshold is not None
            else None,
            "sampled": not self.exact,
        }


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected``, over ``bins`` bins at
    the deciles of ``expected`` (empty shares floored at ``eps``): ~0 the same, > 0.1 a
    shift worth a look, > 0.25 a large one (the usual reading)."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    if not len(expected) or not len(actual):
        return float("nan")
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=len(inner) + 1)
    a = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=len(inner) + 1)
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(current: ScoreSummary, previous: ScoreSummary) -> dict:
    """How ``current``'s scores moved from ``previous``'s: mean and quantile shifts, the
    PSI, and the share below the threshold in each."""
    now, before = current.figures(), previous.figures()
    if not now["count"] or not before["count"]:
        return {"comparable": False}
    return {
        "comparable": True,
        "mean_shift": now["mean"] - before["mean"],
        "quantile_shift": {k: now["quantiles"][k] - before["quantiles"][k]
                           for k in now["quantiles"]},
        "psi": psi(previous.sample, current.sample),
        "below_threshold": {"current": now["below_threshold"],
                            "previous": before["below_threshold"]},
    }


class Extremes:
    """The ``n`` rows of lowest and of highest score seen, whatever the batches' order
    (ties broken by path, so the result does not depend on it either)."""

    def __init__(self, n: int):
        self.n = n
        self._low: list = []  # the n largest (-score, path): the lowest scores
        self._high: list = []  # the n largest (score, path)

    def add(self, scores, paths) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        keep = np.flatnonzero(np.isfinite(scores))
        if self.n and len(keep) > 2 * self.n:  # only rows that can enter, ties included
            x = scores[keep]
            low = np.partition(x, self.n - 1)[self.n - 1]
            high = np.partition(x, len(x) - self.n)[len(x) - self.n]
            keep = keep[(x <= low) | (x >= high)]
        for i in keep:
            s, p = float(scores[i]), paths[i]
            self._push(self._high, (s, p))
            self._push(self._low, (-s, p))

    def _push(self, heap: list, item) -> None:
        if not self.n:
            return
        if len(heap) < self.n:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)

    def lowest(self) -> list[tuple[str, float]]:
        """(path, score), lowest first."""
        return [(p, -s) for s, p in sorted(self._low, reverse=True)]

    def highest(self) -> list[tuple[str, float]]:
        """(path, score), highest first."""
        return [(p, s) for s, p in sorted(self._high, reverse=True)]
