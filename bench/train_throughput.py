"""Training throughput: the real `fiqa train` data path vs the model alone.

Prints, per preset, images/s per worker for
  - model only: forward + backward + AdamW step on a synthetic uint8 batch already on the device
    (eager, and with torch.compile when --compile),
  - the job: `fiqa train` (Ray Train, 1 worker) over generated face-like JPEGs whose short
    edge is 224-1024 px, epoch 2 onwards (epoch 1 includes start-up); decoding happens once,
    into the image cache, whose build rate is printed too.

    python bench/train_throughput.py --presets student-edgenext-xxs teacher-swin-b \\
        --images 4096 --epochs 3 --device cuda --compile

On the 2-core CPU machine use small settings (see bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fiqa_core import create_model  # noqa: E402
from fiqa_core.training import build_optimizer, train_step  # noqa: E402


def model_only(preset: str, size: int, batch: int, device: str, steps: int, compile_: bool):
    dev = torch.device(device)
    model = create_model(preset, image_size=size).to(dev).train()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, 1e-4, 1e-6)
    run_model = torch.compile(model) if compile_ else model
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=dev)
    y = torch.rand(batch, device=dev) * 4 + 1
    t_compile = time.time()
    for _ in range(3):  # warm-up (and compilation)
        train_step(run_model, opt, x, y, model.preprocessing, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_compile = time.time() - t_compile
    t0 = time.time()
    for _ in range(steps):
        train_step(run_model, opt, x, y, model.preprocessing, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.time() - t0), t_compile


def write_faces(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """JPEGs with a realistic size mix (short edge 224-1024), from real photographs."""
    from PIL import Image

    from tests.imagegen import encode, real_photos

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in real_photos()]
    rows = []
    for i in range(n):
        short = int(rng.integers(224, 1025))
        long = int(short * rng.uniform(1.0, 1.4))
        img = photos[i % len(photos)].resize((short, long), Image.BILINEAR)
        name = f"face_{i:05d}.jpg"
        (folder / name).write_bytes(encode(np.asarray(img), "JPEG", quality=90))
        rows.append((str(folder / name), float(rng.uniform(1, 5))))
    return pd.DataFrame(rows, columns=["path", "score"])


def job_rate(preset, size, batch, images_df, work: Path, epochs: int, use_gpu: bool, compile_):
    from fiqa_core import read_checkpoint_config
    from fiqa_core.config import resolve_config
    from jobs import train as train_job

    labels = work / "labels.parquet"
    images_df.to_parquet(labels, index=False)
    out = work / f"{preset}-{size}-{int(compile_)}"
    cfg = resolve_config(
        train_job.TrainConfig,
        None,
        [
            f"labels={labels}",
            f"output={out}",
            f"preset={preset}",
            f"image_size={size}",
            "pretrained=false",
            f"epochs={epochs}",
            f"batch_size={batch}",
            "num_workers=1",
            f"use_gpu={str(use_gpu).lower()}",
            f"compile={str(compile_).lower()}",
            "val_fraction=0.05",
            "cpus_per_worker=2",
        ],
    )
    t0 = time.time()
    train_job.run(cfg)
    total = time.time() - t0
    hist = [e for e in read_checkpoint_config(str(out)).lineage["history"] if e["event"] == "epoch"]
    cache = json.loads(next(Path(f"{out}.work").glob("cache-*/_SUCCESS")).read_text())
    rates = [e["images_per_s"] for e in hist[1:]] or [hist[0]["images_per_s"]]
    return float(np.median(rates)), cache["rows"], total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["student-edgenext-xxs"])
    p.add_argument("--sizes", nargs="+", type=int, help="image size per preset (default: preset's)")
    p.add_argument("--batches", nargs="+", type=int, help="batch per preset (default 128 / 32)")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--skip-job", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fiqa_core import get_preset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        faces = None if args.skip_job else write_faces(work / "faces", args.images)
        for i, preset in enumerate(args.presets):
            size = (args.sizes or [None] * 9)[i] or get_preset(preset).image_size
            default_batch = 128 if get_preset(preset).role == "student" else 32
            batch = (args.batches or [None] * 9)[i] or default_batch
            modes = [False, True] if args.compile else [False]
            for comp in modes:
                rate, warm = model_only(preset, size, batch, args.device, args.steps, comp)
                line = (
                    f"{preset} {size}px batch {batch} {args.device}"
                    f"{' compiled' if comp else ''}: model-only {rate:.1f} images/s"
                    f" (warm-up {warm:.1f} s)"
                )
                if not args.skip_job:
                    job, rows, total = job_rate(
                        preset,
                        size,
                        batch,
                        faces,
                        work,
                        args.epochs,
                        args.device == "cuda",
                        comp,
                    )
                    line += (
                        f"; job {job:.1f} images/s = {100 * job / rate:.0f}% of model-only"
                        f" ({rows} images, {args.epochs} epochs, {total:.0f} s incl. cache build)"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
