"""Scoring throughput and memory: our Ray Data job vs a reference-style per-image loop.

Prints, on the same generated JPEGs:
  - model only: Scorer.score_pixels on a prepared uint8 batch (the ceiling), fp32 and bf16,
    and the ONNX engine (``fiqa export`` file on ONNX Runtime, fp32) at batch 1 (its CPU
    default) and --batch, with the export's time and size and its parity against torch,
  - bf16 against fp32 on the lake's real images: SRCC and largest differences,
  - reduced-scale JPEG decoding (draft) against a full decode: decode rate and score SRCC,
  - reference loop: one image at a time, PIL + torchvision transforms + model (like the
    reference scoring script),
  - our job: `fiqa pseudo-label` end to end (list -> read bytes -> decode/crop -> score ->
    Parquet), as images/s and as a ratio to both, and the number of Parquet files written;
    on each engine in --engines (torch, onnx),
  - peak resident memory of the driver and of the largest Ray worker, per lake size, each
    size in a fresh process (so peaks do not carry over),
  - cold start: the wall time of `fiqa score` over a small lake in a fresh process (Python
    start, Ray start, listing, the scoring actors' model load, scoring, Ray shutdown), for
    this checkout and any other given by --code-root (a worktree of an older commit).

    python bench/score_throughput.py --images 2000 --memory-sizes 2000 20000 --size 64
    python bench/score_throughput.py --cold-only --cold 100 --code-root /tmp/before .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_lake(folder: Path, n: int, realistic: bool, seed: int = 0) -> None:
    from PIL import Image

    from tests.imagegen import encode, real_photos

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in real_photos()]
    for i in range(n):
        sub = folder / f"part{i % 16:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        short = int(rng.integers(224, 1025)) if realistic else int(rng.integers(64, 97))
        img = photos[i % len(photos)].resize((short, int(short * rng.uniform(1, 1.3))))
        (sub / f"img_{i:06d}.jpg").write_bytes(encode(np.asarray(img), "JPEG", quality=90))


def make_checkpoint(path: Path, preset: str, size: int | None) -> str:
    import torch

    from fiqa_core import Calibration, create_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(
        create_model(preset, image_size=size), str(path), calibration=Calibration(5, 1, 0, 1)
    )
    return str(path)


def model_only(
    ckpt: str, batch: int, steps: int, device: str, precision: str = "auto", threads: int = 0
) -> float:
    import torch

    from fiqa_core import Scorer

    if threads:
        torch.set_num_threads(threads)
    scorer = Scorer.from_checkpoint(ckpt, device=device, batch_size=batch, precision=precision)
    return pixels_rate(scorer, batch, steps)


def pixels_rate(scorer, images: int, steps: int) -> float:
    """Images/s of ``scorer.score_pixels`` on ``images`` random prepared images, warmed up."""
    s = scorer.preprocessing.size
    x = np.random.default_rng(0).integers(0, 256, (images, s, s, 3), dtype=np.uint8)
    scorer.score_pixels(x)  # warm-up
    t0 = time.time()
    for _ in range(steps):
        scorer.score_pixels(x)
    return images * steps / (time.time() - t0)


def onnx_model_only(onnx_file: str, batch: int, steps: int, device: str, threads: int = 0
                    ) -> float:
    """The ONNX engine on a prepared uint8 batch: images/s."""
    from fiqa_core import OnnxScorer

    scorer = OnnxScorer(onnx_file, device=device, batch_size=batch, threads=threads or None)
    return pixels_rate(scorer, max(batch, 8), steps)


def onnx_parity(ckpt: str, onnx_file: str, files: list[Path], device: str) -> dict:
    """The ONNX engine against torch fp32 on the same real images."""
    from fiqa_core import OnnxScorer, Scorer
    from fiqa_core.metrics import srcc

    data = [f.read_bytes() for f in files]
    fp32 = Scorer.from_checkpoint(ckpt, device=device, precision="fp32").score(data)
    ort = OnnxScorer(onnx_file, device=device).score(data)
    return {"images": len(files), "srcc": srcc(fp32["raw_score"], ort["raw_score"]),
            "max_raw_diff": float(np.abs(fp32["raw_score"] - ort["raw_score"]).max()),
            "max_score_diff": float(np.abs(fp32["score"] - ort["score"]).max())}


def _side_by_side_child(model, batch, barrier, results, engine) -> None:
    if engine == "onnx":
        onnx_model_only(model, batch, 1, "cpu", 1)  # import, load, warm up
        barrier.wait()
        results.put(onnx_model_only(model, batch, 12, "cpu", 1))
        return
    import torch

    torch.set_num_threads(1)
    model_only(model, batch, 1, "cpu", "bf16")  # import, load, warm up
    barrier.wait()
    results.put(model_only(model, batch, 12, "cpu", "bf16"))


def side_by_side(model: str, batch: int, procs: int, engine: str = "torch") -> float:
    """Model-only images/s of ``procs`` single-threaded processes running at once, summed
    (torch bf16, or the ONNX engine given an exported file)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    children = [
        ctx.Process(target=_side_by_side_child, args=(model, batch, barrier, results, engine))
        for _ in range(procs)
    ]
    for c in children:
        c.start()
    total = sum(results.get() for _ in children)
    for c in children:
        c.join()
    return total


def precision_parity(ckpt: str, files: list[Path], device: str) -> dict:
    """bf16 against fp32 on the same real images: rank agreement and largest differences."""
    from fiqa_core import Calibration, Scorer
    from fiqa_core.metrics import srcc

    data = [f.read_bytes() for f in files]
    fp32 = Scorer.from_checkpoint(ckpt, device=device, precision="fp32").score(data)
    bf16 = Scorer.from_checkpoint(ckpt, device=device, precision="bf16").score(data)
    # a random model's raw outputs span little: calibrate over their spread onto 1..5
    raw = fp32["raw_score"]
    cal = Calibration(5.0, 1.0, float(np.mean(raw)), float(np.std(raw)))
    return {
        "images": len(files),
        "srcc": srcc(raw, bf16["raw_score"]),
        "max_raw_diff": float(np.abs(raw - bf16["raw_score"]).max()),
        "max_calibrated_diff": float(np.abs(cal(raw) - cal(bf16["raw_score"])).max()),
    }


def draft_parity(ckpt: str, files: list[Path], device: str) -> dict:
    """Reduced-scale JPEG decoding (``draft``) against a full decode: decode rate and SRCC."""
    from fiqa_core import Scorer
    from fiqa_core.metrics import srcc

    scorer = Scorer.from_checkpoint(ckpt, device=device, precision="fp32")
    data = [f.read_bytes() for f in files]
    out = {}
    for draft in (False, True):
        t0 = time.time()
        decoded = [scorer.prepare(d, draft=draft) for d in data]
        out[f"decodes_per_s_{draft}"] = len(data) / (time.time() - t0)
        out[draft] = scorer.score_decoded(decoded)["raw_score"]
    out["srcc"] = srcc(out[False], out[True])
    return out


def reference_loop(ckpt: str, files: list[Path], device: str) -> float:
    """One image at a time, the way the reference scoring script works."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from fiqa_core import load_checkpoint

    model, config = load_checkpoint(ckpt)
    model = model.to(device).eval()
    pre = config.preprocessing
    tf = T.Compose(
        [T.Resize(pre.size), T.CenterCrop(pre.size), T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    )
    t0 = time.time()
    with torch.no_grad():
        for f in files:
            x = tf(Image.open(f).convert("RGB")).unsqueeze(0).to(device)
            float(model(x))
    return len(files) / (time.time() - t0)


def _rss_mb(pid: int, field: str = "RssAnon") -> float:
    """Resident memory of a process. ``RssAnon`` is its private memory; ``VmRSS`` also
    counts the shared object-store pages a Ray worker has mapped (they belong to the store,
    whose size is fixed, and grow with how many blocks passed through, not with a leak)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _role(pid: int) -> str:
    """What a Ray worker is doing, from its process title (``ray::MapBatches(read_batch)->...``);
    the roles reported are those seen while the worker was within 8 MB of its peak."""
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
    except OSError:
        return ""
    return title[5:] if title.startswith("ray::") and title != "ray::IDLE" else ""


def _ray_worker_pids() -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read()
            except OSError:
                continue
            if b"default_worker.py" in cmd or cmd.startswith(b"ray::"):
                pids.append(int(d))
    return pids


class MemoryPeaks:
    """Peak resident memory of this process (the driver) and of the largest Ray worker,
    sampled every 0.5 s between ``start()`` and ``stop()``; ``driver_pid`` samples another
    process as the driver (a child running the job)."""

    def __init__(self, driver_pid: int | None = None):
        self.driver_pid = driver_pid or os.getpid()
        self.peak = {"driver_mb": 0.0, "worker_mb": 0.0, "worker_rss_mb": 0.0,
                     "worker_roles": ""}
        self._by_pid: dict[int, list] = {}  # pid -> [peak private MB, roles seen]
        self._stop = threading.Event()

    def _sample(self) -> None:
        peak = self.peak
        while not self._stop.is_set():
            peak["driver_mb"] = max(peak["driver_mb"], _rss_mb(self.driver_pid))
            for pid in _ray_worker_pids():
                mb, role = _rss_mb(pid), _role(pid)
                entry = self._by_pid.setdefault(pid, [0.0, set()])
                if mb > entry[0] + 8:  # a new high: remember what the worker was doing
                    entry[0], entry[1] = mb, set()
                if role and mb >= entry[0] - 8:
                    entry[1].add(role)
                peak["worker_rss_mb"] = max(peak["worker_rss_mb"], _rss_mb(pid, "VmRSS"))
            if self._by_pid:
                mb, roles = max(self._by_pid.values(), key=lambda e: e[0])
                peak["worker_mb"], peak["worker_roles"] = mb, ", ".join(sorted(roles))
            time.sleep(0.5)

    def start(self) -> MemoryPeaks:
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        return dict(self.peak)


def job_run(lake: str, ckpt: str, out: str, device: str, settings: list[str] = ()) -> dict:
    """Run the job in this process, sampling driver and worker memory meanwhile."""
    from fiqa_core.config import resolve_config
    from jobs import score

    peaks = MemoryPeaks().start()
    cfg = resolve_config(
        score.ScoreConfig,
        None,
        [
            f"input={lake}",
            f"model={ckpt}",
            f"output={out}",
            f"use_gpu={'true' if device == 'cuda' else 'false'}",
            *settings,
        ],
    )
    summary = score.run(cfg, nightly=False)
    return {**summary, **peaks.stop(), "parquet_files": len(list(Path(out).rglob("*.parquet")))}


def cold_start(images: int, code_roots: list[str], realistic: bool,
               engines: tuple[str, ...] = ("torch",)) -> None:
    """``fiqa score`` over a fresh small lake, in a fresh process per checkout (and per
    engine, in this checkout): wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(tmp / "ckpt", "student-edgenext-xxs", None)
        write_lake(tmp / "lake", images, realistic)
        runs = [(root, ckpt) for root in code_roots]
        if "onnx" in engines:
            from fiqa_core import export_onnx

            export_onnx(ckpt, str(tmp / "model.onnx"))
            runs.append((str(ROOT), str(tmp / "model.onnx")))
        for i, (root, model) in enumerate(runs):
            cmd = [sys.executable, "-m", "jobs.cli", "score", f"input={tmp / 'lake'}",
                   f"model={model}", f"output={tmp / f'out{i}'}"]
            env = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1"}
            t0 = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
            wall = time.time() - t0
            if r.returncode != 0:
                print(r.stderr[-3000:])
                raise SystemExit(1)
            print(f"cold start: fiqa score over {images} images from {root}, model "
                  f"{Path(model).name}: {wall:.1f} s wall (process start to exit)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="student-edgenext-xxs")
    p.add_argument("--size", type=int, help="model input size (default: the preset's)")
    p.add_argument("--images", type=int, default=1000, help="lake size for the rate comparison")
    p.add_argument("--realistic", action="store_true", help="short edge 224-1024 px JPEGs")
    p.add_argument("--reference-images", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--memory-sizes", type=int, nargs="*", default=[])
    p.add_argument("--device", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="job settings for the end-to-end and memory runs")
    p.add_argument("--engines", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"],
                   help="engines of the end-to-end job runs")
    p.add_argument("--cold", type=int, default=100, help="cold-start lake size (0: skip)")
    p.add_argument("--cold-only", action="store_true", help="only the cold-start measurement")
    p.add_argument("--code-root", nargs="+", default=[str(ROOT)], help="checkouts to cold-start")
    p.add_argument("--job-only", nargs=3, metavar=("LAKE", "CKPT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.job_only:  # child process of the memory comparison
        print(json.dumps(job_run(*args.job_only, device, args.set)))
        return
    if args.cold_only:
        cold_start(args.cold, [os.path.abspath(r) for r in args.code_root], args.realistic)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(tmp / "ckpt", args.preset, args.size)
        lake = tmp / "lake"
        write_lake(lake, args.images, args.realistic)
        files = sorted(lake.rglob("*.jpg"))[: args.reference_images]
        cores = os.cpu_count() or 1
        threads = [0] if device == "cuda" else sorted({1, cores})
        rates = {
            (p, t): model_only(ckpt, args.batch, 10, device, p, t)
            for p in ("fp32", "bf16") for t in threads
        }
        for (p, t), r in rates.items():
            where = f", {t} thread{'s' * (t > 1)} in one process" if t else ""
            print(f"model only, torch {p}, batch {args.batch}{where}: {r:.1f} images/s", flush=True)
        if device == "cpu" and cores > 1:
            # the job runs single-threaded actors side by side (jobs.score.actor)
            rates[("bf16", "procs")] = side_by_side(ckpt, args.batch, cores)
            print(f"model only, torch bf16, batch {args.batch}, {cores} single-threaded "
                  f"processes side by side: {rates[('bf16', 'procs')]:.1f} images/s", flush=True)
        if "onnx" in args.engines and device == "cuda":
            from fiqa_core.engines.onnx_engine import cuda_available

            if not cuda_available():
                print("no onnx engine figures: this onnxruntime has no CUDA provider", flush=True)
                args.engines = [e for e in args.engines if e != "onnx"]
        onnx_file = str(tmp / "model.onnx")
        if "onnx" in args.engines:
            from fiqa_core import export_onnx

            t0 = time.time()
            meta = export_onnx(ckpt, onnx_file)
            print(f"fiqa export: {time.time() - t0:.1f} s, {meta['onnx_bytes'] / 1e6:.1f} MB, "
                  f"raw difference to torch on its check images "
                  f"{meta['check']['max_abs_raw_diff']:.1e}", flush=True)
            for b in sorted({1, args.batch}):
                for t in threads:
                    r = rates[("onnx", b, t)] = onnx_model_only(onnx_file, b, 10, device, t)
                    where = f", {t} thread{'s' * (t > 1)} in one process" if t else ""
                    print(f"model only, onnx engine fp32, batch {b}{where}: {r:.1f} images/s",
                          flush=True)
            if device == "cpu" and cores > 1:
                rates[("onnx", "procs")] = side_by_side(onnx_file, 1, cores, "onnx")
                print(f"model only, onnx engine fp32, batch 1, {cores} single-threaded processes "
                      f"side by side: {rates[('onnx', 'procs')]:.1f} images/s", flush=True)
            op = onnx_parity(ckpt, onnx_file, files, device)
            print(f"onnx engine vs torch fp32 on {op['images']} images: SRCC {op['srcc']:.6f}, "
                  f"largest raw difference {op['max_raw_diff']:.2e}, largest calibrated "
                  f"difference {op['max_score_diff']:.2e}", flush=True)
        torch.set_num_threads(cores)
        parity = precision_parity(ckpt, files, device)
        print(
            f"bf16 vs fp32 on {parity['images']} images: SRCC {parity['srcc']:.5f}, largest raw "
            f"difference {parity['max_raw_diff']:.5f}, largest calibrated difference "
            f"{parity['max_calibrated_diff']:.4f} on a 1..5 scale",
            flush=True,
        )
        draft = draft_parity(ckpt, files, device)
        print(
            f"draft (reduced-scale JPEG decoding) vs full decoding on {len(files)} images: "
            f"{draft['decodes_per_s_True']:.1f} vs {draft['decodes_per_s_False']:.1f} decodes/s "
            f"(one thread), score SRCC {draft['srcc']:.5f}",
            flush=True,
        )
        model_rate = max(rates.values())
        ref_rate = reference_loop(ckpt, files, device)
        for engine in args.engines:
            model = onnx_file if engine == "onnx" else ckpt
            job = job_run(str(lake), model, str(tmp / f"out-{engine}"), device, args.set)
            rate = job["images_per_s"]
            print(
                f"{args.preset} {args.size or 'preset'} px on {device}, {args.images} images: "
                f"best model-only {model_rate:.1f} images/s; reference per-image loop "
                f"{ref_rate:.1f} images/s; our job on the {engine} engine {rate:.1f} images/s "
                f"end to end ({job['seconds']} s incl. listing) = "
                f"{100 * rate / model_rate:.0f}% of model-only, {rate / ref_rate:.2f}x the "
                f"reference loop; {job['parquet_files']} Parquet files for {job['rows']} rows",
                flush=True,
            )
        if args.cold:
            import ray

            ray.shutdown()  # a cold start has the machine to itself
            cold_start(args.cold, [os.path.abspath(r) for r in args.code_root], args.realistic,
                       tuple(args.engines))
        for n in args.memory_sizes:
            big = tmp / f"lake{n}"
            write_lake(big, n, realistic=False, seed=n)
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--job-only",
                    str(big),
                    ckpt,
                    str(tmp / f"out{n}"),
                    "--device",
                    device,
                    "--set",
                    *args.set,
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if r.returncode != 0:
                print(r.stderr[-3000:])
                raise SystemExit(1)
            # Ray may forward worker log lines after the result: take the last JSON line
            res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
            print(
                f"memory at {n} images: driver peak {res['driver_mb']:.0f} MB private; "
                f"largest Ray worker peak {res['worker_mb']:.0f} MB private "
                f"({res['worker_roles'] or 'idle'}), "
                f"{res['worker_rss_mb']:.0f} MB RSS with mapped object-store pages "
                f"({res['images_per_s']} images/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
