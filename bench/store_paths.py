"""What the store-safety paths cost: Ray Data's Parquet write and the planning shuffle,
before and after, side by side in one run.

    .venv/bin/python bench/store_paths.py [--rows 300000] [--buckets 64] [--no-s3]

- **write, local**: ``write_parquet`` of ``--rows`` result rows, partitioned by bucket, to a
  local path (before: straight to pyarrow's local filesystem) and through
  ``storage.arrow_filesystem`` (after: every file under a hidden temporary name, then
  ``os.replace``, published only when whole).
- **write, S3**: the same to SeaweedFS on 127.0.0.1 (started here, stopped after; the
  tests' server): before, pyarrow's native S3 client, which Ray picks for an ``s3://``
  path; after, s3fs through ``arrow_filesystem`` (botocore's retries, uploads discarded
  when not whole).
- **plan shuffle**: ``groupby("bucket").map_groups`` over the same rows with Ray's default
  partition count (200; before) and one partition per bucket (after).

Each case prints seconds (best of ``--repeats``) and rows/s; every write is read back and
its row count checked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rows_table(n: int, buckets: int):
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from fiqa_core.lake import bucket_of

    paths = [f"s3://lake/faces/{i // 1000:04d}/img_{i:07d}.jpg" for i in range(n)]
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "path": paths,
        "score": rng.uniform(1, 5, n),
        "raw_score": rng.normal(0, 1, n),
        "model": "student-edgenext-xxs-3bdf2a6f13b2",
        "status": "ok",
        "error": None,
        "size": rng.integers(20_000, 2_000_000, n),
        "mtime": 1.7e9 + rng.uniform(0, 1e6, n),
        "etag": [f"{i:032x}" for i in range(n)],
        "bucket": [bucket_of(p, buckets) for p in paths],
    })
    return pa.Table.from_pandas(df, preserve_index=False)


def count_rows(fs, root: str) -> int:
    import pyarrow.parquet as pq

    files = [p for p in fs.find(root) if p.endswith(".parquet")]
    return sum(pq.read_metadata(f, filesystem=fs).num_rows for f in files)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()

    import fsspec
    import ray

    from fiqa_core import storage

    server = None
    if not args.no_s3:  # before Ray starts: its workers inherit the credentials
        from tests.s3server import SeaweedS3, make_bucket

        server = SeaweedS3()
        os.environ.update(AWS_ACCESS_KEY_ID=server.access_key,
                          AWS_SECRET_ACCESS_KEY=server.secret_key,
                          AWS_DEFAULT_REGION=server.region,
                          AWS_ENDPOINT_URL=server.direct_endpoint)
        make_bucket(server.direct_endpoint, "bench")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    table = rows_table(args.rows, args.buckets)
    ds = ray.data.from_arrow(table).repartition(8).materialize()
    work = Path(tempfile.mkdtemp(prefix="fiqa-bench-"))
    results = []

    def write(target: str, filesystem=None, path=None):
        def run():
            storage.remove(target)
            ds.write_parquet(path or target, filesystem=filesystem, partition_cols=["bucket"],
                             min_bytes_per_file=64 * 2**20, row_group_size=100_000)
        return run

    def case(name: str, fn, target: str):
        seconds = timed(fn, args.repeats)
        fs, root = fsspec.core.url_to_fs(target)
        n = count_rows(fs, root)
        assert n == args.rows, (name, n)
        results.append((name, seconds))
        print(f"{name:<48} {seconds:7.2f} s  {args.rows / seconds:10,.0f} rows/s  "
              f"({n:,} rows read back)", flush=True)

    local = str(work / "local")
    case("write, local: pyarrow's filesystem (before)", write(local), local)
    fs, path = storage.arrow_filesystem(local)
    case("write, local: arrow_filesystem (after)", write(local, fs, path), local)

    if server is not None:
        import pyarrow.fs as pafs

        native = pafs.S3FileSystem(endpoint_override=server.direct_endpoint,
                                   access_key=server.access_key,
                                   secret_key=server.secret_key, region=server.region,
                                   scheme="http")
        s3 = "s3://bench/scores"
        case("write, S3: pyarrow's native client (before)",
             write(s3, native, "bench/scores"), s3)
        fs, path = storage.arrow_filesystem(s3)
        case("write, S3: s3fs via arrow_filesystem (after)", write(s3, fs, path), s3)

    def shuffle(partitions):
        def run():
            ds.groupby("bucket", num_partitions=partitions).map_groups(
                lambda g: g.head(1), batch_format="pandas").materialize()
        return run

    for name, partitions in (("plan shuffle: 200 partitions (before)", None),
                             (f"plan shuffle: {args.buckets} partitions (after)",
                              args.buckets)):
        seconds = timed(shuffle(partitions), args.repeats)
        print(f"{name:<48} {seconds:7.2f} s  {args.rows / seconds:10,.0f} rows/s", flush=True)

    if server is not None:
        server.stop()
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
