"""Face detection + alignment throughput beside the scorer's, in one run.

    .venv/bin/python bench/faces_rate.py [--photos 48] [--device cpu|cuda] [--batch 8]

Photos: scenes of 1280 x 960 (each one to three faces from scikit-image's photographs,
pasted at several scales, on face-free backgrounds; they are decoded once, before timing).
Per path it prints photos/s and faces/s on one CPU thread (or on the device):
detection (RetinaFace mobilenet-0.25 on a copy reduced to a 640 long side) in onnxruntime
and in torch (batched), alignment to the model's 352 px FFHQ template, and the student
scorer (EdgeNeXt-XXS at 352 px) on the aligned crops, so it shows which one bounds a node;
and the scoring actor's whole path on the device (``actor_path``: the photos as JPEG bytes
decoded there, nvJPEG on a GPU, then detected, aligned and resized: what a GPU node runs).
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


def measure(n: int, batch: int, device: str, threads: int = 1) -> dict:
    """Every path's rate on ``n`` scenes (see the module's docstring)."""
    torch.set_num_threads(threads)
    backgrounds = imagegen.FACE_FREE
    photos = [imagegen.face_scene((1280, 960), LAYOUTS[i % 3], backgrounds[i % 3])[0]
              for i in range(n)]
    tensors = [as_tensor(ph, device) for ph in photos]
    res = {"photos": n, "device": device, "threads": threads, "batch": batch}
    backends = ["torch"] + (["onnxruntime"] if device == "cpu" else [])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    found = None
    for backend in backends:
        det = Detector(device=device, backend=backend, threads=threads)
        det.detect(tensors[:2])  # warm
        batches = [tensors[i:i + batch] for i in range(0, len(tensors), batch)]
        out = []

        def run(det=det, batches=batches, out=out):
            out.clear()
            for b in batches:
                out.extend(det.detect(b))
            sync()

        s = timed(run)
        found = out
        res[f"detect_{backend}"] = {"photos_per_s": round(n / s, 1),
                                    "faces": sum(len(f) for f in out)}
    faces = sum(len(f) for f in found)
    crops = []
    s = timed(lambda: crops.__setitem__(slice(None), [
        c for t, f in zip(tensors, found, strict=True)
        for c in align_faces(t, f, "model", 352, "all")]))
    res["align"] = {"faces_per_s": round(faces / s, 1), "photos_per_s": round(n / s, 1)}
    res["actor_path"] = actor_path(photos, device, threads, sync)
    from fiqa_core import create_model

    model = create_model("student-edgenext-xxs", image_size=352).eval().to(device)
    x = torch.from_numpy(np.stack([c.pixels for c in crops])).permute(0, 3, 1, 2).float()
    x = (x / 255).to(device)
    with torch.inference_mode():
        model(x[:batch])
        s = timed(lambda: ([model(x[i:i + batch]) for i in range(0, len(x), batch)], sync()))
    res["score_student_fp32"] = {"faces_per_s": round(len(x) / s, 1)}
    return res


def actor_path(photos: list, device: str, threads: int, sync) -> dict:
    """What a scoring actor does with photos the face stage deferred to it (JPEG bytes):
    decode on the device, detect, align, resize (jobs.score.faces_stage.device_faces)."""
    from jobs.score.faces_stage import device_faces
    from jobs.score.pipeline import DEFERRED

    jpegs = [imagegen.encode(ph, "JPEG") for ph in photos]
    batch = {"path": np.array([f"p{i}.jpg" for i in range(len(jpegs))], dtype=object),
             "size": np.array([len(j) for j in jpegs]), "mtime": np.zeros(len(jpegs)),
             "etag": np.array([None] * len(jpegs), dtype=object),
             "bucket": np.zeros(len(jpegs), dtype=np.int64),
             "status": np.array([DEFERRED] * len(jpegs), dtype=object),
             "error": np.array([None] * len(jpegs), dtype=object),
             "encoded": np.array(jpegs, dtype=object)}
    face = {"template": "model", "threshold": 0.9, "min_face": 16, "mode": "all"}
    det = Detector(device=device, backend="torch", threads=threads)  # as the actor holds it
    device_faces(dict(batch), det, face, 352, 10**8)  # warm
    rows = {}
    s = timed(lambda: (rows.update(device_faces(dict(batch), det, face, 352, 10**8)[0]),
                       sync()))
    return {"photos_per_s": round(len(jpegs) / s, 1),
            "faces_per_s": round(len(rows["path"]) / s, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    res = measure(a.photos, a.batch, a.device, a.threads)
    print(json.dumps(res, indent=1))
    print("\n| path | photos/s | faces/s |\n| --- | --- | --- |")
    for k, v in res.items():
        if isinstance(v, dict):
            rate = v.get("photos_per_s")
            per_face = v.get("faces_per_s") or round(v["faces"] / a.photos * rate, 1)
            print(f"| {k} | {rate or '-'} | {per_face} |")


if __name__ == "__main__":
    main()
