"""What every scoring engine shares: prepared images -> score columns. Imports no torch.

Every engine (:mod:`fiqa_core.engines`) prepares images with the same code and returns the
same columns, statuses and rows; :class:`ScorerBase` holds that part, so an engine only
says how a batch of prepared pixels becomes raw and calibrated scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..calibration import Calibration
from ..images import OK, Decoded, prepare_image, stack_decoded
from ..preprocessing import Preprocessing


class ScorerBase:
    """Prepared images -> ``raw_score`` and ``score`` columns, with statuses.

    An engine sets ``preprocessing``, ``calibration``, ``batch_size``, ``model_id``,
    ``max_pixels``, ``precision``, ``device`` and ``engine``, and implements
    :meth:`score_pixels`; :meth:`raw_and_score` may return the model's own calibrated output.
    """

    preprocessing: Preprocessing
    calibration: Calibration | None
    batch_size: int
    model_id: str
    max_pixels: int
    engine: str

    def score_pixels(self, pixels) -> np.ndarray:
        """Raw model outputs (float64) for a uint8 NHWC batch of prepared S x S images."""
        raise NotImplementedError

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return self.calibration(raw) if self.calibration is not None else np.asarray(raw)

    def raw_and_score(self, pixels) -> tuple[np.ndarray, np.ndarray]:
        """Raw and calibrated scores of prepared images, all usable."""
        raw = self.score_pixels(pixels)
        return raw, self.calibrate(raw)

    def prepare(self, item: bytes | np.ndarray, draft: bool = False) -> Decoded:
        """Decode + resize + centre-crop one image (CPU work; never raises for bad data)."""
        return prepare_image(item, self.preprocessing.size, max_pixels=self.max_pixels, draft=draft)

    def score_prepared(self, pixels, status: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores for prepared images and their decode statuses, one row each.

        Only rows with status ``ok`` go through the model; the others get NaN.

        Returns:
            ``raw_score`` and ``score`` (calibrated) columns.
        """
        ok = np.asarray(status, dtype=object) == OK
        raw, score = np.full(len(ok), np.nan), np.full(len(ok), np.nan)
        if ok.any():
            raw[ok], score[ok] = self.raw_and_score(pixels[ok])
        return {"raw_score": raw, "score": score}

    def score_decoded(self, decoded: Sequence[Decoded]) -> dict[str, np.ndarray]:
        """:meth:`score_prepared` for :meth:`prepare` results, with ``status`` and ``error``."""
        batch = stack_decoded(decoded, self.preprocessing.size)
        scores = self.score_prepared(batch["pixels"], batch["status"])
        return {**scores, "status": batch["status"], "error": batch["error"]}

    def score(self, items: Sequence[bytes | np.ndarray]) -> dict[str, np.ndarray]:
        """Score encoded images (bytes) or decoded HxWx3 uint8 arrays.

        Returns:
            Columns, one entry per input in order: ``raw_score`` and ``score`` (NaN where
            the image was refused), ``status`` and ``error`` (see :mod:`fiqa_core.images`).
        """
        return self.score_decoded([self.prepare(item) for item in items])

    def describe(self) -> str:
        """One line for logs: engine, precision, batch and model."""
        return (f"{self.engine} engine in {self.precision}, batch {self.batch_size}, model "
                f"{self.model_id}")
