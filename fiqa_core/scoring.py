"""What every scoring engine shares, and which engine runs a model. Imports no torch.

Two engines run a model: ``torch`` (:class:`fiqa_core.Scorer`, a checkpoint directory) and
``onnx`` (:class:`fiqa_core.OnnxScorer`, a file written by ``fiqa export``, through ONNX
Runtime). Both prepare images with the same code and return the same columns, statuses and
rows; :class:`ScorerBase` holds that part, so an engine only says how a batch of prepared
pixels becomes raw and calibrated scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .calibration import Calibration
from .checkpoint_config import CheckpointConfig
from .errors import ConfigError
from .images import OK, Decoded, prepare_image, stack_decoded
from .preprocessing import Preprocessing

ENGINES = ("torch", "onnx")
ONNX_SUFFIX = ".onnx"


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


def is_onnx_file(uri: str) -> bool:
    return str(uri).lower().rstrip("/").endswith(ONNX_SUFFIX)


def resolve_engine(engine: str | None, model: str) -> str:
    """The engine that runs ``model``: as set, else ``onnx`` for a ``.onnx`` file, else torch."""
    if engine is None:
        return "onnx" if is_onnx_file(model) else "torch"
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "torch" and is_onnx_file(model):
        raise ConfigError(
            f"{model} is an ONNX file, which the onnx engine runs: set engine=onnx (or leave "
            "it unset), or point model= at the checkpoint directory it was exported from"
        )
    return engine


def check_onnx_settings(precision: str = "auto", compile: bool = False,
                        device_decode: bool | None = None) -> None:
    """Refuse the torch engine's settings with the onnx engine, which runs the exported file
    in fp32 on pixels prepared on the CPU."""
    torch_only = {"precision": precision not in ("auto", "fp32"), "compile": compile,
                  "device_decode": bool(device_decode)}
    if any(torch_only.values()):
        raise ConfigError(
            f"{', '.join(k for k, v in torch_only.items() if v)}: torch engine setting(s); "
            "the onnx engine runs the exported file in fp32 on pixels the CPU prepares. "
            "Leave them unset, or use engine=torch"
        )


def read_model_config(model: str) -> CheckpointConfig:
    """What a driver needs of a model (id, preprocessing, calibration) without loading it:
    a checkpoint's ``config.json``, or the metadata inside a ``fiqa export`` file."""
    if is_onnx_file(model):
        from .onnx_engine import read_onnx_config

        return read_onnx_config(model)
    from .checkpoint_config import read_checkpoint_config

    return read_checkpoint_config(model)


def load_scorer(model: str, engine: str | None = None, **kwargs) -> ScorerBase:
    """A scorer for ``model`` on ``engine`` (see :func:`resolve_engine`).

    ``kwargs`` go to :meth:`Scorer.from_checkpoint` or :class:`OnnxScorer`; ``threads``
    sets ONNX Runtime's threads (the torch engine uses the process's torch threads). The
    onnx engine given a checkpoint directory exports it in memory first.
    """
    engine = resolve_engine(engine, model)
    threads = kwargs.pop("threads", None)
    if engine == "torch":
        from .scorer import Scorer

        return Scorer.from_checkpoint(model, **kwargs)
    from .onnx_engine import OnnxScorer

    check_onnx_settings(kwargs.pop("precision", "auto"), kwargs.pop("compile", False))
    if is_onnx_file(model):
        return OnnxScorer(model, threads=threads, **kwargs)
    from .onnx_export import export_bytes

    data, _ = export_bytes(model)
    return OnnxScorer(data, threads=threads, source=model, **kwargs)
