"""The ``onnx`` scoring engine: a ``fiqa export`` file run by ONNX Runtime. Imports no torch.

Needs only onnxruntime, numpy and Pillow: it runs where PyTorch is not installed. Images
are prepared by the same code as the torch engine, and the rows (statuses, errors, NaN
scores for refused images) are the same; the scores are the graph's outputs.
"""

from __future__ import annotations

import json

import numpy as np

from .. import storage
from ..calibration import Calibration
from ..checkpoint_config import CheckpointConfig
from ..errors import ConfigError, InputError
from ..extras import require
from ..images import DEFAULT_MAX_PIXELS
from ..preprocessing import Preprocessing
from .base import ScorerBase

FORMAT = "fiqa-onnx/1"
ONNX_SUFFIX = ".onnx"
METADATA_KEY = "fiqa"
INPUT = "pixels"
OUTPUTS = ("raw_score", "score")
SIDECAR_SUFFIX = ".json"  # student.onnx -> student.onnx.json
# Images per run() call when unset. On a CPU, one: ONNX Runtime ran the student (352 px,
# one thread) at 78-80 images/s one at a time, 74.5 at 4, 67 at 8, 52 at 32 (its kernels
# gain nothing from a batch there, and a batch's activations leave the caches); an
# accelerator takes many at once.
CPU_BATCH, GPU_BATCH = 1, 64


def _session(data: bytes, source: str, providers: list, threads: int | None,
             optimize: bool = True):
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not optimize:  # metadata only: no graph work
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as e:  # onnxruntime's errors are untyped: invalid file, opset, operator
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"{source}: onnxruntime {ort.__version__} cannot load it ({first}). If it names "
            "an opset, re-export with a lower one (fiqa export opset=18) or upgrade "
            "onnxruntime; if it names an IR version, upgrade onnxruntime (fiqa's exports "
            "need >= 1.18); otherwise the file is not a complete ONNX model"
        ) from e


def cuda_available() -> bool:
    """Whether this onnxruntime has a CUDA provider (the onnxruntime-gpu package)."""
    require("onnxruntime")
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _providers(device: str) -> list:
    """onnxruntime's providers for ``cpu``, ``cuda`` or ``cuda:N``."""
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return [("CPUExecutionProvider", {})]
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"device must be cpu, cuda or cuda:N for the onnx engine, got {device!r}")
    if not cuda_available():
        raise InputError(
            f"onnxruntime {ort.__version__} here has no CUDA provider (it has "
            f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu, or score "
            "on the CPU (use_gpu=false)"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}),
            ("CPUExecutionProvider", {})]


def _read(model: str) -> bytes:
    try:
        return storage.read_bytes(model)
    except FileNotFoundError:
        raise InputError(f"{model}: no such ONNX file (write one with fiqa export)") from None


def _metadata(session, source: str) -> dict:
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{source}: not a fiqa ONNX export (no '{METADATA_KEY}' metadata of format "
            f"{FORMAT}); export a fiqa checkpoint with: fiqa export model=CKPT output=FILE.onnx"
        )
    return meta


def config_of(meta: dict) -> CheckpointConfig:
    """The model facts a ``fiqa export`` file's metadata carries, as a checkpoint config."""
    pre = meta["preprocessing"]
    cal = meta.get("calibration")
    return CheckpointConfig(
        id=meta["model_id"],
        preset=meta["preset"],
        preprocessing=Preprocessing(int(pre["size"]), tuple(pre["mean"]), tuple(pre["std"])),
        calibration=Calibration.from_dict(cal) if cal else None,
        weights_sha256=meta.get("weights_sha256", ""),
        created=meta.get("exported", ""),
    )


def _sidecar(model: str) -> dict | None:
    """The sidecar's content, if it belongs to the file beside it: it names the file's size
    and was written after it (a file replaced without its sidecar fails either check)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(model)
        side, file = fs.info(path + SIDECAR_SUFFIX), fs.info(path)
        meta = json.loads(fs.cat_file(path + SIDECAR_SUFFIX))
        fresh = fs.modified(path + SIDECAR_SUFFIX) >= fs.modified(path)
    except Exception:  # no sidecar, no file, no modification times, not JSON: read the file
        return None
    ok = (isinstance(meta, dict) and meta.get("format") == FORMAT and side["size"] > 0
          and meta.get("onnx_bytes") == file["size"] and fresh)
    return meta if ok else None


def read_onnx_config(model: str) -> CheckpointConfig:
    """Model id, preprocessing and calibration of a ``fiqa export`` file (local or URI):
    from its sidecar ``<file>.json`` when there is one (milliseconds, where the file itself
    may be hundreds of MB to fetch), else from the file's metadata. Whoever loads the file
    checks its id against this (:class:`OnnxScorer`'s ``model_id``)."""
    meta = _sidecar(model)
    if meta is not None:
        try:
            return config_of(meta)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a damaged sidecar: the file itself says
    session = _session(_read(model), model, ["CPUExecutionProvider"], 1, optimize=False)
    return config_of(_metadata(session, model))


class OnnxScorer(ScorerBase):
    """Scores images with a ``fiqa export`` file on ONNX Runtime.

    Args:
        model: The file (local path or URI) or its bytes.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (onnxruntime's CUDA provider, from the
            onnxruntime-gpu package).
        batch_size: Images per run; None: 1 on a CPU, 64 on CUDA.
        max_pixels: Refuse images with more pixels than this (``too_large``).
        threads: ONNX Runtime's intra-op threads; None: its default (every core).
        source: What to call ``model`` in messages when it is bytes.
    """

    engine = "onnx"

    def __init__(self, model: str | bytes, device: str | None = None,
                 batch_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 threads: int | None = None, source: str | None = None):
        require("onnxruntime")
        source = source or (model if isinstance(model, str) else "ONNX model")
        data = model if isinstance(model, bytes) else _read(model)
        self.device = str(device or "cpu")
        providers = _providers(self.device)
        self.session = _session(data, source, providers, threads)
        if self.session.get_providers()[0] != providers[0][0]:
            raise InputError(f"{source}: onnxruntime's CUDA provider did not start on "
                             f"{self.device}; check the CUDA and cuDNN libraries it needs, or "
                             "score on the CPU")
        self.metadata = _metadata(self.session, source)
        config = config_of(self.metadata)
        self.preprocessing = config.preprocessing
        self.calibration = config.calibration
        self.model_id = config.id
        self.max_pixels = max_pixels
        self.batch_size = batch_size or (GPU_BATCH if self.device.startswith("cuda") else CPU_BATCH)
        self.precision = self.metadata.get("precision", "fp32")
        self.precision_reason = "the exported file's"
        self.threads = threads
        self.compiled, self.compile_seconds = False, None

    def raw_and_score(self, pixels) -> tuple[np.ndarray, np.ndarray]:
        """The graph's ``raw_score`` and ``score`` for prepared uint8 NHWC pixels."""
        pixels = np.asarray(pixels)  # a torch tensor from device decoding is not expected here
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (
                self.preprocessing.size, self.preprocessing.size, 3):
            raise ValueError(f"pixels must be uint8 (N, {self.preprocessing.size}, "
                             f"{self.preprocessing.size}, 3), got {pixels.dtype} {pixels.shape}")
        raws, scores = [], []
        for start in range(0, len(pixels), self.batch_size):
            chunk = np.ascontiguousarray(pixels[start : start + self.batch_size])
            raw, score = self.session.run(list(OUTPUTS), {INPUT: chunk})
            raws.append(raw)
            scores.append(score)
        if not raws:
            return np.zeros(0), np.zeros(0)
        return (np.concatenate(raws).astype(np.float64),
                np.concatenate(scores).astype(np.float64))

    def score_pixels(self, pixels) -> np.ndarray:
        return self.raw_and_score(pixels)[0]


def load(model: str | bytes, device: str | None = None, batch_size: int | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None,
         source: str | None = None, precision: str = "auto", compile: bool = False
         ) -> OnnxScorer:
    """The onnx engine's ``load`` (:class:`fiqa_core.engines.Engine`): a ``fiqa export``
    file or its bytes. ``precision`` and ``compile`` were checked already (fp32, off)."""
    return OnnxScorer(model, device=device, batch_size=batch_size, max_pixels=max_pixels,
                      threads=threads, source=source)
