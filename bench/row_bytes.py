"""Object-store bytes per row between the decode stage and the scoring actors, with JPEGs
deferred to the scorer's device (``device_decode=true``), before and after rows carried
only what the next stage needs; in one run, on this CPU.

    python bench/row_bytes.py [--images 300] [--size 352] [--baseline 3552afe]

The baseline is the code at ``--baseline`` (a git worktree, run in a subprocess): every
row carried an S x S x 3 pixel block, zeros for a deferred JPEG or a refused file. Each
side runs its own decode stage over the same lake through Ray Data and reports
``Dataset.size_bytes()`` (the blocks in Ray's object store) per row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(lake: str, size: int) -> dict:
    """Run this checkout's decode stage (whichever layout it has) over ``lake``."""
    import pandas as pd
    import ray

    from jobs.score import pipeline

    paths = sorted(str(p) for p in Path(lake).rglob("*") if p.is_file())
    listing = pd.DataFrame({"path": paths, "size": 0, "mtime": 0.0, "etag": None,
                            "bucket": 0})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_pandas(listing)
    common = {"size": size, "draft": False, "max_pixels": 10**8, "defer_jpeg": True}
    if hasattr(pipeline, "read_batch"):  # read -> decode, as the score pipeline runs them
        ds = ds.map_batches(pipeline.read_batch, fn_kwargs={"threads": 8},
                            batch_format="pandas", batch_size=32)
        ds = ds.map_batches(pipeline.decode_batch, fn_kwargs=common, batch_format="pandas",
                            batch_size=32)
    else:  # the baseline's one read + decode stage
        ds = ds.map_batches(pipeline.decode_batch, fn_kwargs={**common, "threads": 8},
                            batch_format="pandas", batch_size=32)
    ds = ds.materialize()
    rows = ds.count()
    statuses = ds.to_pandas()["status"].value_counts().to_dict()
    total = ds.size_bytes()
    ray.shutdown()
    return {"rows": rows, "bytes": total, "bytes_per_row": round(total / rows),
            "statuses": statuses}


def write_lake(folder: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import score_throughput as st

    st.write_lake(folder / "jpeg", n, realistic=True)
    from tests import imagegen

    for name, (data, _) in imagegen.zoo(imagegen.real_photos()[1][:60, :60]).items():
        (folder / f"zoo_{name}.img").write_bytes(data)  # PNGs, bad files, odd JPEGs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--baseline", default="3552afe")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: a lake to measure here
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.size)))
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        write_lake(lake, args.images)
        old = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            results = {}
            for name, tree in (("before", old), ("after", ROOT)):
                env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
                r = subprocess.run([sys.executable, str(ROOT / "bench" / "row_bytes.py"),
                                    "--measure", str(lake), "--size", str(args.size)],
                                   cwd=tree, env=env, capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                results[name] = json.loads(r.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
    before, after = results["before"], results["after"]
    print(json.dumps(results, indent=2))
    print(f"object-store bytes per row, decode -> score, device_decode=true, {args.size} px, "
          f"{before['rows']} files: before {before['bytes_per_row']:,} B, after "
          f"{after['bytes_per_row']:,} B ({before['bytes'] / after['bytes']:.1f}x fewer)")


if __name__ == "__main__":
    main()
