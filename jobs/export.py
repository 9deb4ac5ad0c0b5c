"""``fiqa export``: a checkpoint -> an ONNX file that scores prepared pixels, anywhere.

    fiqa export model=models/student output=student.onnx

The file takes uint8 RGB pixels, NHWC, at the model's size (short side resized to it,
bilinear and antialiased, then centre-cropped), any batch size; it normalises them itself
and returns raw_score and score (the checkpoint's calibration applied in the graph). Its
metadata and the sidecar <output>.json carry the size, the resize rule, the model id, the
weights' checksum and the calibration. The export checks itself: onnxruntime and PyTorch
must agree to 1e-4 on check images. Score with it through fiqa (engine=onnx, or
model=<file>.onnx) or with onnxruntime alone (README). Runs in this process; needs the
onnx extra.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from fiqa_core.config import resolve_config, setting
from jobs.cli import overrides_of, parse_args, run_job, settings_parser


@dataclass(frozen=True)
class ExportConfig:
    model: str = setting(help="checkpoint directory (path or URI)")
    output: str = setting(help="the ONNX file to write (path or URI, ending in .onnx); its "
                          "sidecar is <output>.json")
    opset: int = setting(18, "ONNX opset: PyTorch's exporter writes 18 and up (in ONNX IR "
                         "version 10: onnxruntime >= 1.18 runs it); choose what your runtime "
                         "runs")
    json: bool = setting(False, "print the sidecar's content as JSON")


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa export", (__doc__ or "").strip(), ExportConfig)


def run(cfg: ExportConfig) -> dict:
    from fiqa_core.checkpoint_config import read_checkpoint_config
    from fiqa_core.extras import require

    for module in ("onnxscript", "onnxruntime"):
        require(module)
    read_checkpoint_config(cfg.model)  # not ours: a clear error before torch loads
    from fiqa_core.engines.onnx_export import ExportMismatch, export_onnx
    from jobs.cli import JobFailed

    t0 = time.time()
    try:
        meta = export_onnx(cfg.model, cfg.output, cfg.opset)
    except ExportMismatch as e:
        raise JobFailed(f"export of {cfg.model} failed its check, no model file was written: "
                        f"{e}") from e
    if cfg.json:
        print(json.dumps(meta, indent=2))
    else:
        size = meta["preprocessing"]["size"]
        print(f"fiqa: exported {meta['model_id']} to {cfg.output} ({meta['onnx_bytes'] / 1e6:.1f} "
              f"MB, opset {meta['opset']}, {time.time() - t0:.0f} s); input uint8 "
              f"[batch, {size}, {size}, 3] RGB, outputs raw_score and score; onnxruntime "
              f"matches PyTorch to {meta['check']['max_abs_raw_diff']:.1e}; sidecar "
              f"{cfg.output}.json")
    return meta


def main(args: argparse.Namespace) -> int:
    return run_job(
        "fiqa export",
        lambda: run(resolve_config(ExportConfig, args.config, overrides_of(args))),
    )


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
