"""``fiqa export``: a checkpoint -> one ONNX file that takes prepared pixels and returns scores.

The graph holds everything after the resize and crop: its input is ``pixels``, uint8 NHWC
(batch x S x S x 3, RGB, any batch size), and it normalises them itself; its outputs are
``raw_score`` and ``score``, the 4-parameter logistic calibration applied inside the graph.
A consumer resizes the short side to S (bilinear, antialiased, as PIL does), centre-crops
S x S, and runs it. The file's metadata (``fiqa`` key, JSON) and a sidecar
``<file>.json`` say exactly that, with the model id, the weights' checksum, the
calibration, and the parity the export measured against PyTorch.

Needs torch, ``onnx`` and ``onnxscript`` (PyTorch's exporter) and ``onnxruntime`` (the
check); the ``onnx`` extra installs them. Scoring the file needs only onnxruntime
(:mod:`fiqa_core.engines.onnx_engine`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os

import fsspec
import numpy as np
import torch
from torch import nn

from .. import storage
from ..calibration import Calibration
from ..checkpoint import load_checkpoint
from ..checkpoint_config import CheckpointConfig
from ..errors import ConfigError, InputError
from ..extras import installed_version, require
from ..preprocessing import Preprocessing
from .onnx_engine import FORMAT, INPUT, METADATA_KEY, ONNX_SUFFIX, OUTPUTS, SIDECAR_SUFFIX

# PyTorch's exporter writes opset 18 and up, in ONNX IR version 10 (onnxruntime >= 1.18)
DEFAULT_OPSET, MIN_OPSET = 18, 18
# the largest raw-score difference to PyTorch (fp32) an export may show on its check images
PARITY_LIMIT = 1e-4
RESIZE_RULE = ("resize the short side to size with bilinear interpolation, antialiased "
               "(PIL Image.BILINEAR, torchvision Resize(size)), then crop the centre "
               "size x size (torchvision CenterCrop); RGB, 8 bits per channel")
CALIBRATION_FORMULA = "score = b2 + (b1 - b2) / (1 + exp(-(raw_score - b3) / |b4|))"


class ExportMismatch(RuntimeError):
    """The exported graph's scores differ from PyTorch's beyond :data:`PARITY_LIMIT`."""


class Deployable(nn.Module):
    """A quality model with its input normalisation and calibration: uint8 NHWC pixels in,
    ``(raw_score, score)`` out, the same arithmetic as :class:`fiqa_core.Scorer` in fp32."""

    def __init__(self, model: nn.Module, pre: Preprocessing, calibration: Calibration | None):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.calibrated = calibration is not None
        b = [calibration.b1, calibration.b2, calibration.b3, abs(calibration.b4)] if (
            calibration) else [0.0, 0.0, 0.0, 1.0]
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        raw = self.model((x - self.mean) / self.std)
        if not self.calibrated:
            return raw, raw.clone()
        b1, b2, b3, b4 = self.b[0], self.b[1], self.b[2], self.b[3]
        return raw, b2 + (b1 - b2) / (1.0 + torch.exp(-(raw - b3) / b4))


def export_bytes(checkpoint: str, opset: int = DEFAULT_OPSET, check: bool = True
                 ) -> tuple[bytes, dict]:
    """Export checkpoint directory ``checkpoint`` to ONNX in memory.

    Returns:
        The ONNX file's bytes and its metadata (also inside the file, key ``fiqa``).

    Raises:
        ConfigError: ``opset`` outside what the exporter writes and onnxruntime runs.
        NotFoundError / InputError: ``checkpoint`` is not a fiqa checkpoint directory.
        ExportMismatch: the graph's raw scores differ from PyTorch's by > 1e-4 on the
            export's check images (``check``).
    """
    require("onnxscript")
    import onnx

    _check_opset(opset, onnx.defs.onnx_opset_version())
    model, config = load_checkpoint(checkpoint)
    wrapped = Deployable(model, config.preprocessing, config.calibration).eval()
    size = config.preprocessing.size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)  # batch 2: 1 would specialise
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapped, (example,), input_names=[INPUT], output_names=list(OUTPUTS),
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
            dynamo=True, external_data=False, verbose=False,
        )
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter's version conversion gave up (it only logs that)
        raise ConfigError(
            f"PyTorch's exporter could not write opset {opset} for this model (it wrote "
            f"{written}); choose another opset (the default {DEFAULT_OPSET})"
        )
    meta = _metadata(config, checkpoint, opset)
    if check:
        meta["check"] = _check_parity(wrapped, proto.SerializeToString(), size, opset)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    return proto.SerializeToString(), meta


def export_onnx(checkpoint: str, output: str, opset: int = DEFAULT_OPSET) -> dict:
    """Export ``checkpoint`` to the ONNX file ``output`` (local path or URI) and its
    sidecar ``<output>.json``; returns the sidecar's content.

    The output is checked before the export starts: it must end in ``.onnx`` and be
    writable. The file is written first, then the sidecar, each atomically where the store
    allows; the sidecar records the file's SHA-256.
    """
    if not str(output).lower().endswith(ONNX_SUFFIX):
        raise ConfigError(f"output must be a file name ending in {ONNX_SUFFIX}, got {output!r}")
    _check_writable(output)
    data, meta = export_bytes(checkpoint, opset)
    sidecar = {**meta, "onnx_sha256": hashlib.sha256(data).hexdigest(), "onnx_bytes": len(data)}
    side = output + SIDECAR_SUFFIX
    side_bytes = json.dumps(sidecar, indent=2).encode()
    target = side
    try:
        storage.remove(side)  # never a new file beside an old sidecar
        target = output
        storage.write_bytes(output, data)
        target = side
        storage.write_bytes(side, side_bytes)
    except Exception as e:  # any store's error: permissions, network, a missing filesystem
        raise InputError(f"cannot write {target}: {type(e).__name__}: {e}. Choose an output "
                         "you can write") from e
    return sidecar


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's libraries log a line per graph rewrite at INFO: errors only, meanwhile."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _metadata(config: CheckpointConfig, checkpoint: str, opset: int) -> dict:
    pre = config.preprocessing
    cal = config.calibration
    return {
        "format": FORMAT,
        "model_id": config.id,
        "preset": config.preset,
        "weights_sha256": config.weights_sha256,
        "checkpoint": str(checkpoint),
        "precision": "fp32",
        "input": {"name": INPUT, "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                  "shape": ["batch", pre.size, pre.size, 3]},
        "outputs": {
            "raw_score": "the model's raw output, float32, one per image",
            "score": "raw_score on the label scale by the calibration below (raw_score "
                     "itself when there is none), float32",
        },
        "preprocessing": {"size": pre.size, "resize": RESIZE_RULE, "mean": list(pre.mean),
                          "std": list(pre.std),
                          "normalisation": "inside the graph: (pixels / 255 - mean) / std"},
        "calibration": ({**cal.to_dict(), "formula": CALIBRATION_FORMULA, "inside_graph": True}
                        if cal else None),
        "opset": opset,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"fiqa": installed_version("fiqa") or "unknown",
                     "torch": torch.__version__, "onnx": installed_version("onnx") or "unknown"},
    }


def _check_opset(opset: int, exporter_max: int) -> None:
    if not MIN_OPSET <= opset <= exporter_max:
        raise ConfigError(
            f"opset {opset} is not supported: PyTorch's exporter here writes opsets "
            f"{MIN_OPSET}..{exporter_max}; choose one your runtime runs (opset "
            f"{DEFAULT_OPSET}, the default, runs on onnxruntime >= 1.18)"
        )


def _check_parity(wrapped: nn.Module, data: bytes, size: int, opset: int) -> dict:
    """Score seeded check images with onnxruntime and PyTorch (fp32); the largest raw
    difference, or :class:`ExportMismatch` beyond :data:`PARITY_LIMIT`."""
    require("onnxruntime")
    import onnxruntime as ort

    pixels = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own errors (opset, operator) are not typed
        fix = (f"Choose a lower opset (the default {DEFAULT_OPSET})" if opset > DEFAULT_OPSET
               else "Upgrade onnxruntime (pip install -U onnxruntime)")
        raise ConfigError(
            f"onnxruntime {ort.__version__} cannot run the export at opset {opset}: "
            f"{str(e).splitlines()[0]}. {fix}"
        ) from e
    raw = session.run([OUTPUTS[0]], {INPUT: pixels})[0]
    with torch.inference_mode():
        want = wrapped(torch.from_numpy(pixels))[0].numpy()
    diff = float(np.max(np.abs(raw.astype(np.float64) - want)))
    if not diff <= PARITY_LIMIT:
        raise ExportMismatch(f"the ONNX graph's raw scores differ from PyTorch's by {diff:.3g} "
                             f"(limit {PARITY_LIMIT}) on {len(pixels)} check images")
    return {"images": len(pixels), "max_abs_raw_diff": diff, "onnxruntime": ort.__version__}


def _check_writable(output: str) -> None:
    """A clear error now, not after a minute of exporting, if ``output`` cannot be written."""
    if "://" in str(output) and not str(output).startswith("file://"):
        try:  # the store's filesystem must at least exist here (s3fs, gcsfs, ...)
            fsspec.core.url_to_fs(str(output))
        except Exception as e:
            raise ConfigError(f"cannot write output {output}: {type(e).__name__}: {e}") from e
        return  # an object store answers the write itself; its error is reported then
    path = os.path.abspath(str(output).removeprefix("file://"))
    if os.path.isdir(path):
        raise InputError(f"output {output} is a directory; give a file name ending in .onnx")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder of output {output}: {e}") from e
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"cannot write output {output}: permission denied. Choose a folder "
                         "you can write")

