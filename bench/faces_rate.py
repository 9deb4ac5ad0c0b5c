"""Face detection + alignment throughput beside the scorer's, in one run.

    .venv/bin/python bench/faces_rate.py [--photos 48] [--device cpu|cuda] [--batch 8]

Photos: scenes of 1280 x 960 (each one to three faces from scikit-image's photographs,
pasted at several scales, on face-free backgrounds; they are decoded once, before timing).
Per path it prints photos/s and faces/s on one CPU thread (or on the device):
detection (RetinaFace mobilenet-0.25 on a copy reduced to a 640 long side) in onnxruntime
and in torch (batched), alignment to the model's 352 px FFHQ template, and the student
scorer (EdgeNeXt-XXS at 352 px) on the aligned crops, so it shows which one bounds a node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiqa_core.faces import Detector, align_faces, as_tensor  # noqa: E402
from tests import imagegen  # noqa: E402

LAYOUTS = [[("astronaut", 1.4, (200, 150))],
           [("camera", 2.0, (700, 300)), ("astronaut", 0.9, (100, 500))],
           [("astronaut", 0.7, (60, 60)), ("camera", 1.2, (500, 420)),
            ("astronaut", 1.1, (900, 80))]]


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    backgrounds = imagegen.FACE_FREE
    photos = [imagegen.face_scene((1280, 960), LAYOUTS[i % 3], backgrounds[i % 3])[0]
              for i in range(a.photos)]
    tensors = [as_tensor(ph, a.device) for ph in photos]
    res = {"photos": a.photos, "device": a.device, "threads": a.threads, "batch": a.batch}
    backends = ["torch"] + (["onnxruntime"] if a.device == "cpu" else [])
    found = None
    for backend in backends:
        det = Detector(device=a.device, backend=backend, threads=a.threads)
        det.detect(tensors[:2])  # warm
        batches = [tensors[i:i + a.batch] for i in range(0, len(tensors), a.batch)]
        out = []
        sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)

        def run(det=det, batches=batches, out=out, sync=sync):
            out.clear()
            for b in batches:
                out.extend(det.detect(b))
            sync()

        s = timed(run)
        found = out
        faces = sum(len(f) for f in out)
        res[f"detect_{backend}"] = {"photos_per_s": round(a.photos / s, 1),
                                    "faces": faces}
    faces = sum(len(f) for f in found)
    crops = []
    s = timed(lambda: crops.__setitem__(slice(None), [
        c for t, f in zip(tensors, found, strict=True)
        for c in align_faces(t, f, "model", 352, "all")]))
    res["align"] = {"faces_per_s": round(faces / s, 1), "photos_per_s": round(a.photos / s, 1)}
    from fiqa_core import create_model

    model = create_model("student-edgenext-xxs", image_size=352).eval().to(a.device)
    x = torch.from_numpy(np.stack([c.pixels for c in crops])).permute(0, 3, 1, 2).float()
    x = (x / 255).to(a.device)
    with torch.inference_mode():
        model(x[: a.batch])
        s = timed(lambda: [model(x[i:i + a.batch]) for i in range(0, len(x), a.batch)])
    res["score_student_fp32"] = {"faces_per_s": round(len(x) / s, 1)}
    print(json.dumps(res, indent=1))
    print("\n| path | photos/s | faces/s |\n| --- | --- | --- |")
    for k, v in res.items():
        if isinstance(v, dict):
            rate = v.get("photos_per_s")
            per_face = v.get("faces_per_s") or round(v["faces"] / a.photos * rate, 1)
            print(f"| {k} | {rate or '-'} | {per_face} |")


if __name__ == "__main__":
    main()
