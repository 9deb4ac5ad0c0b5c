"""Two nights of ``fiqa score`` over a generated lake, as an operator runs them.

    .venv/bin/python bench/night_scale.py [--images 1000000] [--folders 100] [--size 64]
        [--changed 0.01 --deleted 0.005 --added 0.005] [--workdir DIR]
        [--code-root /tmp/before --code-root .]

The lake: ``--images`` small real-photo JPEGs (scikit-image's photographs, short side
64-97 px) in ``--folders`` folders, written once into ``--workdir`` (kept, and reused by a
later run with the same arguments). Night 1 scores it; then ``--changed`` of the files are
rewritten with other bytes, ``--deleted`` removed and ``--added`` new ones written, and
night 2 scores it again. Each night is a fresh ``fiqa score`` process (the checkout's code,
or each ``--code-root``, e.g. a worktree of an older commit: every root runs night 1 on the
same lake, then every root night 2 on the same changed lake).

Per night it prints: wall seconds (the process, Python and Ray start included), the run's
own step seconds (listing, planning, scoring and writing, which stream together, and the
final check), rows checked against the files on disk (one row per image, none missing,
none twice), reused rows checked against the night before (same score, raw score and
scoring time; no changed or new file reused), Parquet files and bytes written, and the
driver's and the largest Ray worker's peak private memory. Beside them: the model alone
on one core (prepared uint8 batches, ``--batch``), one image's decode + resize + crop, and
the limit they set on this machine's cores, ``cores / (1 / model_rate + decode_s)``, with
night 1's ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from score_throughput import MemoryPeaks, make_checkpoint, model_only  # noqa: E402

DATES = ("2026-01-01", "2026-01-02")


def jpeg_pool(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct small JPEGs of real photographs (short side 64-97 px)."""
    from PIL import Image

    from tests.imagegen import encode, real_photos

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in real_photos()]
    pool = []
    for i in range(n):
        short = int(rng.integers(64, 98))
        img = photos[i % len(photos)].resize((short, int(short * rng.uniform(1, 1.3))))
        pool.append(encode(np.asarray(img), "JPEG", quality=int(rng.integers(70, 96))))
    return pool


def image_path(lake: Path, i: int, folders: int, per_folder: int) -> Path:
    return lake / f"f{min(i // per_folder, folders - 1):03d}" / f"img_{i:08d}.jpg"


def write_lake(lake: Path, n: int, folders: int, pool: list[bytes]) -> None:
    done = lake / "_lake.json"
    spec = {"images": n, "folders": folders, "pool": len(pool)}
    if done.exists() and json.loads(done.read_text()) == spec:
        print(f"lake: {n} images in {lake} (kept from an earlier run)", flush=True)
        return
    t0 = time.time()
    per = -(-n // folders)
    for f in range(folders):
        (lake / f"f{f:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image_path(lake, i, folders, per).write_bytes(pool[i % len(pool)])
    done.write_text(json.dumps(spec))
    print(f"lake: wrote {n} images in {folders} folders ({time.time() - t0:.0f} s)", flush=True)


def change_lake(lake: Path, n: int, folders: int, pool: list[bytes], changed: float,
                deleted: float, added: float) -> dict:
    """Night 2's lake: other bytes (another size) in ``changed``, ``deleted`` removed,
    ``added`` new files; the indices of each."""
    rng = np.random.default_rng(1)
    per = -(-n // folders)
    picks = rng.permutation(n)
    n_changed, n_deleted = int(n * changed), int(n * deleted)
    which = {"changed": picks[:n_changed], "deleted": picks[n_changed:n_changed + n_deleted],
             "added": np.arange(n, n + int(n * added))}
    later = time.time() + 10
    for i in which["changed"]:
        p = image_path(lake, i, folders, per)
        old = len(pool[i % len(pool)])
        data = next(b for k, b in enumerate(pool[(i + 1) % len(pool):] + pool)
                    if len(b) != old)
        p.write_bytes(data)
        os.utime(p, (later, later))
    for i in which["deleted"]:
        image_path(lake, i, folders, per).unlink()
    for i in which["added"]:
        image_path(lake, i, folders, per).write_bytes(pool[(i * 7) % len(pool)])
    (lake / "_lake.json").unlink()  # no longer night 1's lake
    return which


def files_on_disk(lake: Path) -> set[str]:
    return {str(p) for p in lake.rglob("*.jpg")}


def run_night(code_root: Path, lake: Path, ckpt: str, out: Path, date: str,
              settings: list[str]) -> dict:
    """``fiqa score`` in a fresh process of ``code_root``'s code, its memory sampled."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "RAY_DEDUP_LOGS": "1"}
    cmd = [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main())",
           "score", f"input={lake}", f"model={ckpt}", f"output={out}", f"run_date={date}",
           "use_gpu=false", *settings]
    t0 = time.time()
    child = subprocess.Popen(cmd, cwd=code_root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    peaks = MemoryPeaks(driver_pid=child.pid).start()
    log = child.stdout.read()
    rc = child.wait()
    wall = time.time() - t0
    memory = peaks.stop()
    if rc != 0:
        sys.exit(f"fiqa score failed ({rc}) in {code_root}:\n{log[-4000:]}")
    part = out / f"date={date}"
    summary = json.loads((part / "_SUCCESS").read_text())
    steps = summary.get("step_seconds") or _steps_from_log(log)
    files = list(part.rglob("*.parquet"))
    return {"wall": wall, "steps": steps, "summary": summary, "memory": memory,
            "files": len(files), "bytes": sum(f.stat().st_size for f in files), "part": part}


def _steps_from_log(log: str) -> dict:
    """Step seconds of a checkout that did not record them: from its progress lines."""
    found = {}
    for key, pattern in (("listed_at", r"fiqa: listed .* \((\d+) s\)"),
                         ("planned_at", r"fiqa: planned .* \((\d+) s\)")):
        m = re.search(pattern, log)
        if m:
            found[key] = float(m.group(1))
    if "listed_at" in found and "planned_at" in found:
        found["planning"] = found["planned_at"] - found["listed_at"]
    return found


def read_rows(part: Path):
    import pyarrow.parquet as pq

    return pq.read_table(part, columns=["path", "score", "raw_score", "scored_at", "reused",
                                        "status"]).to_pandas()


def check_night(rows, on_disk: set[str], before=None, which: dict | None = None,
                lake: Path | None = None, folders: int = 0, n: int = 0) -> dict:
    """One row per file on disk; reused rows equal to the night before, none of them a
    changed or new file."""
    checks = {"rows": len(rows), "unique": int(rows["path"].nunique()),
              "rows_match_files": bool(len(rows) == len(on_disk)
                                       and set(rows["path"]) == on_disk)}
    if before is not None:
        per = -(-n // folders)
        fresh = {str(image_path(lake, i, folders, per)) for k in ("changed", "added")
                 for i in which[k]}
        reused = rows[rows["reused"]].merge(before, on="path", suffixes=("", "_before"))
        same = ((reused["score"] == reused["score_before"])
                | (reused["score"].isna() & reused["score_before"].isna()))
        same &= reused["scored_at"] == reused["scored_at_before"]
        checks.update({
            "reused": int(rows["reused"].sum()),
            "reused_equal_to_night_1": bool(same.all()
                                            and len(reused) == int(rows["reused"].sum())),
            "changed_or_new_reused": int(rows[rows["reused"]]["path"].isin(fresh).sum()),
        })
    return checks


def limits(ckpt: str, pool: list[bytes], size: int, batch: int) -> dict:
    """The model alone on one core, one image's decode + resize + crop, and their limit on
    this machine's cores."""
    from fiqa_core.images import prepare_image

    model = model_only(ckpt, batch, steps=max(20, 2000 // batch), device="cpu",
                       precision="auto", threads=1)
    sample = pool * max(1, 2000 // len(pool))
    t0 = time.perf_counter()
    for data in sample:
        prepare_image(data, size)
    decode_s = (time.perf_counter() - t0) / len(sample)
    cores = os.cpu_count() or 1
    return {"model_images_per_s_1_core": model, "decode_ms": decode_s * 1e3, "cores": cores,
            "limit_images_per_s": cores / (1 / model + decode_s)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--folders", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="the student's input size")
    p.add_argument("--batch", type=int, default=8, help="the model-only batch (the CPU default)")
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--deleted", type=float, default=0.005)
    p.add_argument("--added", type=float, default=0.005)
    p.add_argument("--pool", type=int, default=512, help="distinct JPEGs the lake repeats")
    p.add_argument("--workdir", default="/tmp/fiqa-night-scale")
    p.add_argument("--code-root", action="append", help="checkouts to run (default: this one)")
    p.add_argument("--set", action="append", default=[], help="extra setting for fiqa score")
    args = p.parse_args()

    work = Path(args.workdir)
    lake, outs = work / "lake", work / "out"
    roots = [Path(r).resolve() for r in (args.code_root or [str(ROOT)])]
    pool = jpeg_pool(args.pool)
    write_lake(lake, args.images, args.folders, pool)
    ckpt = make_checkpoint(work / "student", "student-edgenext-xxs", args.size)
    limit = limits(ckpt, pool, args.size, args.batch)
    print(json.dumps({"limits": limit}), flush=True)

    on_disk = files_on_disk(lake)
    results: dict[str, list] = {str(r): [] for r in roots}
    for i, r in enumerate(roots):
        out = outs / f"root{i}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        night = run_night(r, lake, ckpt, out, DATES[0], args.set)
        night["checks"] = check_night(read_rows(night["part"]), on_disk)
        results[str(r)].append(night)
        _print(r, 1, night, limit)
    which = change_lake(lake, args.images, args.folders, pool, args.changed, args.deleted,
                        args.added)
    on_disk = files_on_disk(lake)
    for i, r in enumerate(roots):
        out = outs / f"root{i}"
        night = run_night(r, lake, ckpt, out, DATES[1], args.set)
        before = read_rows(results[str(r)][0]["part"])
        night["checks"] = check_night(read_rows(night["part"]), on_disk, before, which, lake,
                                      args.folders, args.images)
        results[str(r)].append(night)
        _print(r, 2, night, limit)
    print("\n| checkout | night | wall s | listing s | planning s | score+write s | verify s "
          "| scored | reused | rows ok | reuse ok | driver MB | worker MB | files | MiB |")
    print("| --- " * 15 + "|")
    for r, nights in results.items():
        for k, n in enumerate(nights, 1):
            s, c, m = n["steps"], n["checks"], n["memory"]
            print(f"| {Path(r).name} | {k} | {n['wall']:.0f} | {_f(s, 'listing')} | "
                  f"{_f(s, 'planning')} | {_f(s, 'score_and_write')} | {_f(s, 'verify')} | "
                  f"{n['summary']['scored']} | {n['summary']['reused']} | "
                  f"{c['rows_match_files'] and c['rows'] == c['unique']} | "
                  f"{c.get('reused_equal_to_night_1', '-')} | {m['driver_mb']:.0f} | "
                  f"{m['worker_mb']:.0f} | {n['files']} | {n['bytes'] / 2**20:.0f} |")
    first = [n[0] for n in results.values()]
    for r, n in zip(results, first, strict=True):
        rate = n["summary"]["scored"] / n["wall"]
        print(f"{Path(r).name}: night 1 {rate:.0f} images/s over its wall time, "
              f"{rate / limit['limit_images_per_s']:.0%} of the model+decode limit "
              f"({limit['limit_images_per_s']:.0f} images/s on {limit['cores']} cores)")


def _f(steps: dict, key: str) -> str:
    return f"{steps[key]:.1f}" if key in steps else "-"


def _print(root: Path, k: int, night: dict, limit: dict) -> None:
    keep = {key: night[key] for key in ("wall", "steps", "memory", "files", "bytes", "checks")}
    keep["summary"] = {key: night["summary"].get(key) for key in
                       ("scored", "reused", "failed", "images", "seconds", "images_per_s")}
    print(json.dumps({"checkout": str(root), "night": k, **keep}, default=str), flush=True)


if __name__ == "__main__":
    main()
