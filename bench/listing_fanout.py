"""What listing an object store costs: the old listing (one Ray task per top-level folder,
rows as dicts) against the new one (folders split breadth-first, prefixes by key range, rows
as Arrow tables), side by side in one run.

    .venv/bin/python bench/listing_fanout.py [--objects 100000] [--latency-ms 0,100]
        [--local-files 0]

SeaweedFS on 127.0.0.1 (started here, stopped after; the tests' server, reached through the
tests' proxy) holds ``--objects`` tiny objects under one flat prefix (``flat/``) and as many
again spread over 100 prefixes (``spread/p000/`` ...), uploaded with a thread pool. Each
input is listed as ``fiqa score`` lists it (``jobs.score.listing``: the image rows
materialized, every file counted), by:

- **before**: the listing as it was (kept below): the driver lists the top level; each
  top-level folder is listed whole (``fs.find``) in one task, rows as dicts through
  ``flat_map``, then tagged with bucket and is_image in pandas;
- **after, listing_tasks=1**: the new rows (Arrow tables, tagged column by column) without
  fan-out: one task pages through everything;
- **after**: the new listing with its default fan-out (4 parts a CPU, key ranges split past
  10 pages).

``--latency-ms`` adds that much to every listing request (the proxy holds it back): 0 is the
loopback server as it is, 100 is about what a 1,000-key page costs on AWS S3. ``--local-files``
lists that many empty local files in 100 folders the same three ways (``--objects 0`` skips
the object store). Each case prints the best of ``--repeats`` seconds, after one warm-up
listing; every listing's counts are checked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUCKET = "bench"


def upload(client, keys: list[str], threads: int = 16) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=b"x"), keys))


# ---------------------------------------------------------------------------------------------
# the listing before this change (jobs/score/listing.py and fiqa_core/lake.py at 3379579)


def old_list_top(uri: str):
    from fiqa_core.lake import facts, full_uri, split_root
    from fiqa_core.listers import _matcher

    fs, root, pattern = split_root(uri)
    match = _matcher(pattern) if pattern else (lambda name: True)
    files, dirs = [], []
    for info in fs.ls(root, detail=True):
        if info.get("type") == "directory":
            dirs.append(info["name"])
        elif match(info["name"]):
            files.append({"path": full_uri(fs, info["name"], uri), **facts(info)})
    return files, dirs


def old_list_under(uri_like: str, directory: str):
    from fiqa_core.lake import facts, full_uri, split_root
    from fiqa_core.listers import _matcher

    fs, _, pattern = split_root(uri_like)
    match = _matcher(pattern) if pattern else (lambda name: True)
    for name, info in sorted(fs.find(directory, detail=True).items()):
        if match(name):
            yield {"path": full_uri(fs, info["name"], uri_like), **facts(info)}


def old_tag_listing(batch, buckets: int):
    import pandas as pd

    from fiqa_core.lake import bucket_of, is_image_path
    from jobs.score.schema import LISTING_SCHEMA, arrow

    paths = batch["path"].astype(str)
    return arrow(pd.DataFrame({
        "path": paths,
        "size": pd.to_numeric(batch["size"]).astype("Int64"),
        "mtime": pd.to_numeric(batch["mtime"]).astype("float64"),
        "etag": batch["etag"].astype(object),
        "bucket": paths.map(lambda p: bucket_of(p, buckets)),
        "is_image": paths.map(is_image_path),
    }), LISTING_SCHEMA)


def old_list_images(uri: str, buckets: int):
    import pandas as pd
    import ray
    from ray.data.expressions import col

    root_files, dirs = old_list_top(uri)
    parts = [ray.data.from_pandas(pd.DataFrame(root_files, columns=["path", "size", "mtime",
                                                                    "etag"]))]
    if dirs:
        parts.append(ray.data.from_items([{"dir": d} for d in dirs]).flat_map(
            lambda row: old_list_under(uri, row["dir"])))
    listed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    listed = listed.map_batches(old_tag_listing, fn_kwargs={"buckets": buckets},
                                batch_format="pandas").materialize()
    n_files = listed.count()
    images = listed.filter(expr=col("is_image")).drop_columns(["is_image"]).materialize()
    return images, n_files


# ---------------------------------------------------------------------------------------------


def new_list_images(uri: str, buckets: int, tasks: int | None):
    from jobs.score.listing import list_lake, listing_budget

    listing = list_lake(uri, buckets, listing_budget(tasks))
    return listing.images, listing.files


CASES = (("before: a task per top-level folder, dict rows", "old"),
         ("after, listing_tasks=1: Arrow rows, no fan-out", 1),
         ("after: fan-out by depth and key range", None))


def list_all(uri: str, how, buckets: int):
    return old_list_images(uri, buckets) if how == "old" else new_list_images(uri, buckets, how)


def measure(label: str, uri: str, n: int, args) -> None:
    import s3fs

    for case, how in CASES:
        best = float("inf")
        for _ in range(args.repeats):
            s3fs.S3FileSystem.clear_instance_cache()  # the old ls's listing cache
            t = time.perf_counter()
            images, files = list_all(uri, how, args.buckets)
            best = min(best, time.perf_counter() - t)
            assert files == n and images.count() == n, (case, files)
        print(f"{label:<36} {case:<48} {best:7.2f} s  {n / best:>10,.0f} files/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--latency-ms", default="0,100")
    parser.add_argument("--local-files", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--buckets", type=int, default=64)
    args = parser.parse_args()

    from tests.s3server import SeaweedS3

    server = SeaweedS3() if args.objects else None
    work = Path(tempfile.mkdtemp(prefix="fiqa-bench-"))
    try:
        if server is not None:
            upload_lake(server, args.objects)
        import ray

        from jobs.ray_env import cluster_cores, init_ray

        init_ray(None)  # after the environment is set: Ray's workers inherit it
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"Ray: {cluster_cores()} CPUs", flush=True)
        if server is not None:
            s3_cases(server, args)
        if args.local_files:
            local_cases(work, args)
        ray.shutdown()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def upload_lake(server, n: int) -> None:
    from tests.s3server import make_bucket

    os.environ.update(AWS_ACCESS_KEY_ID=server.access_key,
                      AWS_SECRET_ACCESS_KEY=server.secret_key,
                      AWS_DEFAULT_REGION=server.region, AWS_ENDPOINT_URL=server.endpoint)
    make_bucket(server.direct_endpoint, BUCKET)
    flat = [f"flat/img_{i:07d}.jpg" for i in range(n)]
    spread = [f"spread/p{i % 100:03d}/img_{i:07d}.jpg" for i in range(n)]
    t = time.perf_counter()
    upload(server.client(direct=True, max_pool_connections=32), flat + spread)
    print(f"uploaded {2 * n:,} objects in {time.perf_counter() - t:.0f} s", flush=True)


def s3_cases(server, args) -> None:
    from tests.s3server import Fault

    n = args.objects
    new_list_images(f"s3://{BUCKET}/spread/", args.buckets, None)  # start the workers
    for latency in [int(x) for x in args.latency_ms.split(",")]:
        server.faults.clear()
        if latency:
            server.faults.add(Fault(method="GET", query="list-type", times=None,
                                    action=lambda req, s=latency / 1000: time.sleep(s)))
        for name, prefix in (("flat", "flat/"), (f"{n // 100:,} x 100 prefixes", "spread/")):
            measure(f"S3 +{latency} ms/page, {name}", f"s3://{BUCKET}/{prefix}", n, args)


def local_cases(work: Path, args) -> None:
    n, root = args.local_files, work / "lake"
    t = time.perf_counter()
    for i in range(n):
        folder = root / f"d{i % 100:03d}"
        if i < 100:
            folder.mkdir(parents=True)
        (folder / f"img_{i:07d}.jpg").touch()
    print(f"made {n:,} local files in {time.perf_counter() - t:.0f} s", flush=True)
    new_list_images(str(root), args.buckets, None)  # warm the page cache and the workers
    measure(f"local, {n // 100:,} x 100 folders", str(root), n, args)


if __name__ == "__main__":
    main()
