"""A night's report (``fiqa report``) on nights of growing size: seconds and peak memory.

    .venv/bin/python bench/report_scale.py [--rows 100000 1000000] [--workdir DIR]

Per size it writes two committed nights of that many rows in 64 buckets (as fiqa score
writes them: Parquet per bucket, a ``_SUCCESS`` listing the files; scores drawn from a
normal, 1% of the second night rescored, 0.5% failed; the gallery's 24 paths hold real JPEGs,
the only images the report reads), then runs ``fiqa report`` on the second in a
fresh process and prints its wall seconds and peak RSS (``ru_maxrss``) beside a bare
``python -c "import jobs.report"`` of the same process kind, so the growth with rows is
the report's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKETS = 64


def write_night(part: Path, rows: int, images: Path, seed: int, previous=None):
    """One committed night of paths ``images/<row>.jpg``; returns its scores by row (for
    the next night) and which rows failed."""
    from jobs.score.schema import FILE_SCHEMA

    rng = np.random.default_rng(seed)
    idx = np.arange(rows)
    moved = np.zeros(rows, dtype=bool)
    if previous is None:
        scores = rng.normal(3.0, 0.4, rows)
    else:
        scores = previous.copy()
        moved = rng.random(rows) < 0.01
        scores[moved] = rng.normal(3.0, 0.4, int(moved.sum()))
    failed = rng.random(rows) < 0.005
    status = np.where(failed, "corrupt", "ok")
    manifest = []
    for b in range(BUCKETS):
        sel = idx[idx % BUCKETS == b]
        table = pa.table({
            "path": [f"{images}/{i:08d}.jpg" for i in sel],
            "score": pa.array(np.where(failed[sel], np.nan, scores[sel]), from_pandas=True),
            "raw_score": scores[sel], "model": ["m"] * len(sel),
            "pipeline": ["pl-a"] * len(sel), "status": status[sel], "error": [None] * len(sel),
            "size": (sel + moved[sel]).astype(np.int64),  # a rescored file changed
            "mtime": np.full(len(sel), 1.0),
            "etag": [None] * len(sel), "width": np.full(len(sel), 64),
            "height": np.full(len(sel), 64),
            "reused": ~moved[sel] if previous is not None else np.zeros(len(sel), bool),
            "scored_at": ["2026-01-01T00:00:00+00:00"] * len(sel),
        }, schema=FILE_SCHEMA)
        name = f"bucket={b}/part-0.parquet"
        (part / f"bucket={b}").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / name)
        manifest.append({"name": name, "size": (part / name).stat().st_size, "rows": len(sel)})
    marker = {"rows": rows, "images": rows, "files": BUCKETS, "buckets": BUCKETS,
              "model": "m", "pipeline": "pl-a", "seconds": 1.0, "images_per_s": 1.0,
              "skipped_non_image": 0, "manifest": manifest}
    (part / "_SUCCESS").write_text(json.dumps(marker))
    return scores, failed


def gallery_images(folder: Path, scores: np.ndarray, failed: np.ndarray, n: int = 12) -> None:
    """Real JPEGs at the paths of the ``n`` lowest and highest scored rows (the only images
    the report reads); the other rows' files need not exist."""
    from tests.imagegen import encode, real_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos = real_photos()
    order = np.flatnonzero(~failed)[np.argsort(scores[~failed])]
    for k, i in enumerate([*order[:n], *order[-n:]]):
        (folder / f"{i:08d}.jpg").write_bytes(encode(photos[k % len(photos)][:96, :96], "JPEG"))


def measure(code: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, the process's own ``ru_maxrss``) of ``python -c code``
    in a fresh process."""
    probe = ("import atexit, resource, sys; atexit.register(lambda: print('PEAK_KB', "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); ")
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", probe + code], check=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.time() - t0
    peak = [ln for ln in done.stderr.splitlines() if ln.startswith("PEAK_KB")][-1]
    return wall, int(peak.split()[1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--workdir", default="/tmp/fiqa-report-scale")
    args = p.parse_args()
    work = Path(args.workdir)
    base_wall, base_rss = measure("import jobs.report, jobs.report.page, matplotlib.pyplot")
    print(f"bare import: {base_wall:.1f} s, {base_rss:.0f} MB", flush=True)
    results = []
    for rows in sorted(args.rows):
        out = work / f"out-{rows}"
        images = out / "images"
        if not (out / "date=2026-01-02" / "_SUCCESS").exists():
            first, _ = write_night(out / "date=2026-01-01", rows, images, seed=1)
            second, failed = write_night(out / "date=2026-01-02", rows, images, seed=2,
                                         previous=first)
            gallery_images(images, second, failed)
        code = (f"from jobs.cli import main; import sys; sys.exit(main(['report', "
                f"'output={out}', 'date=2026-01-02', 'threshold=2.5']))")
        wall, rss = measure(code)
        data = json.loads((out / "date=2026-01-02" / "_report.json").read_text())
        assert data["counts"]["rows"] == rows, data["counts"]
        results.append((rows, wall, rss, data["scores"]["sampled"]))
        print(json.dumps({"rows": rows, "seconds": round(wall, 1), "peak_rss_mb": round(rss),
                          "sampled": data["scores"]["sampled"],
                          "psi": data["drift"]["psi"]}), flush=True)
    print("\n| rows per night | report seconds | peak RSS MB (bare import: "
          f"{base_rss:.0f}) | quantiles sampled |\n| --- | --- | --- | --- |")
    for rows, wall, rss, sampled in results:
        print(f"| {rows:,} | {wall:.1f} | {rss:.0f} | {sampled} |")


if __name__ == "__main__":
    main()
