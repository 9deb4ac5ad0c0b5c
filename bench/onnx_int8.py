"""Would an int8 export pay? Static int8 (ONNX Runtime, QDQ, per-channel weights, calibrated
on crops of real photographs) against the fp32 export: rate and parity.

Prints, for the student at its preset size, one thread, one image per run (the onnx
engine's CPU default): fp32 and int8 images/s, and int8's SRCC and largest raw difference
against fp32 on held-out crops. The model is untrained (random weights, head scaled so the
raw scores spread over a few units), so the parity is a proxy; the rate is not.

    python bench/onnx_int8.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo_crops(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` random square crops of scikit-image's photographs, resized to ``size``."""
    from PIL import Image

    from tests.imagegen import real_photos

    photos, rng, out = real_photos(), np.random.default_rng(seed), []
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(p[y : y + s, x : x + s]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop))
    return np.stack(out)


def rate(session, pixels: np.ndarray, runs: int) -> float:
    session.run(None, {"pixels": pixels[:1]})
    t0 = time.perf_counter()
    for i in range(runs):
        session.run(None, {"pixels": pixels[i % len(pixels) : i % len(pixels) + 1]})
    return runs / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calibration-images", type=int, default=48)
    p.add_argument("--test-images", type=int, default=96)
    p.add_argument("--runs", type=int, default=60)
    args = p.parse_args()
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from fiqa_core import create_model, export_onnx, save_checkpoint
    from fiqa_core.metrics import srcc

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = create_model("student-edgenext-xxs")
        with torch.no_grad():
            model.quality[1].weight.mul_(30)
        save_checkpoint(model, f"{tmp}/ckpt")
        fp32 = f"{tmp}/fp32.onnx"
        size = export_onnx(f"{tmp}/ckpt", fp32)["preprocessing"]["size"]
        calib = photo_crops(args.calibration_images, size, seed=1)
        test = photo_crops(args.test_images, size, seed=2)

        class Photos(CalibrationDataReader):
            def __init__(self):
                self.batches = iter({"pixels": calib[i : i + 1]} for i in range(len(calib)))

            def get_next(self):
                return next(self.batches, None)

        t0 = time.time()
        quantize_static(fp32, f"{tmp}/int8.onnx", Photos(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        print(f"int8 static quantisation ({len(calib)} photo crops): {time.time() - t0:.1f} s")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sessions = {name: ort.InferenceSession(f"{tmp}/{name}.onnx", opts)
                    for name in ("fp32", "int8")}
        raw = {name: np.concatenate([s.run(["raw_score"], {"pixels": test[i : i + 1]})[0]
                                     for i in range(len(test))])
               for name, s in sessions.items()}
        print(f"int8 vs fp32 on {len(test)} held-out photo crops: SRCC "
              f"{srcc(raw['fp32'], raw['int8']):.5f}, largest raw difference "
              f"{np.abs(raw['fp32'] - raw['int8']).max():.4f} (raw spread "
              f"{np.ptp(raw['fp32']):.2f})")
        for name, s in sessions.items():
            print(f"{name}: {rate(s, test, args.runs):.1f} images/s ({size} px, 1 thread, batch 1)")


if __name__ == "__main__":
    main()
