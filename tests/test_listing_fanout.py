"""Listing that fans out: folders breadth-first, object-store prefixes by key range, every key
exactly once. Key ranges against a model of ListObjectsV2 in both orders stores list in (byte
order, as AWS S3; folder order, as SeaweedFS), then local folders and the real S3 server of
the tests (SeaweedFS behind the fault proxy), each against a plain listing."""

import random

import fsspec
import pytest

from fiqa_core import keyranges
from fiqa_core.keyranges import KeyRange, list_range, split, split_points
from fiqa_core.lake import Budget, bucket_of, facts, is_image_path, list_parts, plan_listing

ODD = ["a b.jpg", "ünï/çé.png", "a+b=c%20&.jpg", "x%2Fy.jpg", "日本/写真.JPG", "tab\tx.jpg",
       "😀.jpeg", "～.png", "2024.csv", "2024/01.jpg", "2024-x/02.jpg", "a.c", "a/b", "a+b",
       "dir/", "dir/in.jpg", "empty/", "deep/1/2/3/4/5.jpg", "~tilde", "notes.txt"]


class ModelS3:
    """ListObjectsV2 (Prefix, StartAfter, ContinuationToken, MaxKeys, Delimiter) over a set of
    keys, listed in byte order or in folder order: SeaweedFS's, where ``/`` sorts first and a
    StartAfter naming a folder skips all of it."""

    def __init__(self, keys, order: str):
        self.order = order
        self.keys = sorted(set(keys), key=self._rank)
        self.calls = []

    def _rank(self, key: str):
        return key.encode() if self.order == "bytes" else key.split("/")

    def _after(self, key: str, start: str) -> bool:
        if self.order == "bytes":
            return key.encode() > start.encode()
        k, s = key.split("/"), start.split("/")
        return k > s and k[: len(s)] != s

    def delete(self, key: str) -> None:
        self.keys.remove(key)

    def call_s3(self, method, Bucket, Prefix="", MaxKeys=1000, StartAfter=None,  # noqa: N803
                ContinuationToken=None, Delimiter=None):
        assert method == "list_objects_v2"
        self.calls.append(StartAfter)
        keys = [k for k in self.keys if k.startswith(Prefix)]
        if ContinuationToken is not None:
            keys = [k for k in keys if self._after(k, ContinuationToken)]
        elif StartAfter is not None:
            keys = [k for k in keys if self._after(k, StartAfter)]
        items, last = [], None  # (key or None, common prefix or None)
        for k in keys:
            cut = k.find(Delimiter, len(Prefix)) if Delimiter else -1
            if cut < 0:
                items.append((k, None, k))
            elif not items or items[-1][1] != k[: cut + 1]:
                items.append((None, k[: cut + 1], k))
            else:
                items[-1] = (None, k[: cut + 1], k)
        page, more = items[:MaxKeys], len(items) > MaxKeys
        out = {"Contents": [{"Key": k, "Size": 1} for k, _, _ in page if k is not None],
               "CommonPrefixes": [{"Prefix": p} for _, p, _ in page if p is not None],
               "IsTruncated": more}
        if more:
            last = page[-1][2]
            out["NextContinuationToken"] = last
        return out


def drain_ranges(fs, prefix: str, pages: int, page_keys: int, pieces: int):
    """A prefix listed range by range, as the listing tasks do; (keys, ranges listed)."""
    todo, keys, ranges = [KeyRange("b", prefix)], [], 0
    while todo:
        r = todo.pop(random.randrange(len(todo)))
        got, rest = list_range(fs, r, pages, page_keys)
        ranges += 1
        keys += [c["Key"] for c in got]
        if rest is not None:
            todo += split(rest, [c["Key"] for c in got], pieces)
    return keys, ranges


def random_keys(rng: random.Random, n: int) -> list[str]:
    """Keys of odd characters, as a filesystem-backed store holds them: no key is also a
    folder of others, no empty folder names."""
    alphabet = "ab/.+ é0-9~😀"
    keys = {"p/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            for _ in range(n)}
    keys = {k for k in keys if "//" not in k and not k.endswith("/")}
    return [k for k in keys if not any(o.startswith(k + "/") for o in keys)]


KEY_SETS = {
    "numbered": [f"p/img_{i:06d}.jpg" for i in range(700)],
    "unpadded": [f"p/{i}.jpg" for i in range(700)],
    "hex": [f"p/{random.Random(i).getrandbits(64):016x}.png" for i in range(700)],
    "deep": [f"p/{i % 7}/{i % 5}/{i}.jpg" for i in range(500)] + [f"p/{i}.jpg" for i in range(7)],
    "odd": ["p/" + k for k in ODD] + [f"p/{c}{i}" for i in range(40) for c in "a+/"],
}


@pytest.mark.parametrize("order", ["bytes", "folders"])
@pytest.mark.parametrize("name", sorted(KEY_SETS))
def test_key_ranges_list_every_key_exactly_once(order, name):
    random.seed(0)
    keys = KEY_SETS[name] + ["q/outside.jpg", "p"]
    fs = ModelS3(keys, order)
    expected = sorted(k for k in keys if k.startswith("p/"))
    for pages, page_keys, pieces in ((1, 7, 8), (2, 3, 64), (1, 1, 2), (3, 50, 5)):
        got, ranges = drain_ranges(fs, "p/", pages, page_keys, pieces)
        assert sorted(got) == expected, (pages, page_keys, pieces)
        assert ranges > 1 or pages * page_keys >= len(expected)
    assert fs.call_s3("list_objects_v2", "b", "empty/") == {
        "Contents": [], "CommonPrefixes": [], "IsTruncated": False}
    assert drain_ranges(fs, "empty/", 1, 5, 8) == ([], 1)


@pytest.mark.parametrize("order", ["bytes", "folders"])
def test_key_ranges_of_random_keys(order):
    rng = random.Random(1)
    for case in range(30):
        keys = random_keys(rng, rng.randint(1, 300))
        fs = ModelS3(keys, order)
        random.seed(case)
        got, _ = drain_ranges(fs, "p/", rng.randint(1, 3), rng.randint(1, 9), rng.randint(2, 9))
        assert sorted(got) == sorted(set(keys)), case


def test_a_flat_prefix_fans_out_in_a_few_rounds():
    fs = ModelS3([f"p/img_{i:07d}.jpg" for i in range(20_000)], "bytes")
    todo, rounds, widest = [KeyRange("b", "p/")], 0, 1
    while todo:  # every range of a round at once, as tasks run
        rounds += 1
        nxt = []
        for r in todo:
            got, rest = list_range(fs, r, 2, 100)
            if rest is not None:
                nxt += split(rest, [c["Key"] for c in got], 16)
        todo, widest = nxt, max(widest, len(nxt))
    # 100 tasks' worth of keys: sequential pages would be 100 rounds
    assert rounds <= 6 and widest >= 16


def test_split_points_are_between_and_in_order():
    sample = [f"p/img_{i:07d}.jpg" for i in range(1000)]
    points = split_points(sample, None, 7)
    assert points == sorted(points) and len(points) == 7 and points[0] > sample[-1]
    assert points[:3] == ["p/img_00019980", "p/img_00029970", "p/img_00039960"]  # a sample apart
    stop = "p/img_0003000.jpg"
    assert all(sample[-1] < p < stop for p in split_points(sample, stop, 7))
    assert split_points(sample, "p/img_0001998/x.jpg", 7) == []  # never a prefix of the stop
    assert all("/" not in p[2:] and "." not in p for p in points)  # only characters above "/"
    assert split_points(["k"], None, 3)  # a sample of one key still splits
    assert split(KeyRange("b", "p/", after="k"), ["k"], 1) == [KeyRange("b", "p/", after="k")]


@pytest.mark.parametrize("order", ["bytes", "folders"])
def test_a_stop_key_deleted_while_listing(order):
    keys = [f"p/{i:04d}.jpg" for i in range(100)]
    fs = ModelS3(keys, order)
    r = KeyRange("b", "p/", after="p/0010.jpg", until="p/0049.jpg")
    got, rest = list_range(fs, r, 1, 10)  # stop found: p/0050.jpg
    assert rest.stop == "p/0050.jpg" and [c["Key"] for c in got][-1] == "p/0020.jpg"
    fs.delete("p/0050.jpg")
    got, rest = list_range(fs, rest, None, 10)
    assert [c["Key"] for c in got][-1] == "p/0049.jpg" and rest is None  # stopped past it
    # its end and all after it deleted: the listing runs out, and that is fine
    for k in keys[50:]:
        if k in fs.keys:
            fs.delete(k)
    got, rest = list_range(fs, KeyRange("b", "p/", after="p/0040.jpg", until="p/0048.jpg",
                                        stop="p/0049.jpg"), None, 10)
    assert len(got) == 8 and rest is None
    # a deleted end followed by keys no order places surely after it: the next range's own
    # (it lists p/a/x.jpg too in byte order) are left to it
    fs = ModelS3(["p/a.jpg", "p/a/x.jpg"], order)
    r = KeyRange("b", "p/", until="p/a", stop="p/a.jpg")
    fs.delete("p/a.jpg")
    assert [c["Key"] for c in list_range(fs, r, None, 10)[0]] == (
        [] if order == "bytes" else ["p/a/x.jpg"])


def test_a_store_that_lists_in_no_consistent_order_is_an_error():
    class Inconsistent(ModelS3):
        def call_s3(self, method, Bucket, MaxKeys=1000, **kwargs):  # noqa: N803
            if MaxKeys == 1:  # where the next range begins: a key the listing never shows
                return {"Contents": [{"Key": "p/zzz", "Size": 1}], "IsTruncated": True}
            return super().call_s3(method, Bucket, MaxKeys=MaxKeys, **kwargs)

    fs = Inconsistent([f"p/{i}" for i in range(5)], "bytes")
    with pytest.raises(keyranges.ListingOrderError, match="no consistent order"):
        list_range(fs, KeyRange("b", "p/", until="p/2"), None, 10)


# ---------------------------------------------------------------------------------------------
# local folders


def drain(uri: str, budget: Budget):
    """plan_listing and list_parts, run in order: (rows, parts listed)."""
    table, parts = plan_listing(uri, budget)
    rows, listed = table.to_pylist(), 0
    while parts:
        found, rest = list_parts(uri, parts[:1], budget)
        rows += found.to_pylist()
        parts = parts[1:] + rest
        listed += 1
    return rows, listed


def expected_rows(fs, root: str, like: str, match=lambda name: True) -> list[tuple]:
    """What fsspec's find reports, as the listing gives it (the old listing's rows)."""
    proto = "://" in like
    return sorted((fs.unstrip_protocol(n) if proto else n, *facts(i).values())
                  for n, i in fs.find(root, detail=True).items() if match(n))


def rows_of(rows) -> list[tuple]:
    return sorted((r["path"], r["size"], r["mtime"], r["etag"]) for r in rows)


@pytest.fixture()
def local_lake(tmp_path):
    root = tmp_path / "lake"
    for i, name in enumerate(ODD + [f"one/two/{j}/f{j}.jpg" for j in range(12)]):
        p = root / name
        if name.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x" * i)
    (root / "link.jpg").symlink_to(root / "a b.jpg")
    return root


def test_local_listing_splits_by_depth(local_lake):
    fs = fsspec.filesystem("file")
    root = str(local_lake)
    expected = expected_rows(fs, root, root)
    # 1: one task lists it all; 2 or 5: the 9 top folders; 30: all on the driver (no level
    # holds 30 folders); a level over the driver's pages of entries: a task's
    for budget, parts in ((Budget(1), 1), (Budget(2), 9), (Budget(5), 9), (Budget(30), 0),
                          (Budget(30, page_keys=5), 1)):
        rows, listed = drain(root, budget)
        assert rows_of(rows) == expected and listed == parts, budget
    # few top-level folders: splitting goes deeper until there are enough parts
    _, parts = plan_listing(str(local_lake / "one"), Budget(tasks=5))
    assert sorted(parts) == [str(local_lake / "one" / "two" / str(j)) for j in sorted(
        map(str, range(12)))]
    # with a protocol, paths keep it; a glob applies at every depth, ** also to none
    rows, _ = drain(f"file://{root}", Budget(tasks=4))
    assert rows_of(rows) == expected_rows(fs, root, f"file://{root}")
    pattern = f"{root}/**/*.jpg"
    from fiqa_core.listers import _matcher

    rows, _ = drain(pattern, Budget(tasks=4))
    want = expected_rows(fs, root, root, _matcher(pattern))
    assert rows_of(rows) == want and f"{root}/a b.jpg" in [r[0] for r in want]
    assert not drain(str(local_lake / "empty"), Budget(tasks=4))[0]
    with pytest.raises(FileNotFoundError, match="no such folder or prefix"):
        plan_listing(str(local_lake / "nope"), Budget())


def test_list_images_on_local_folders_in_ray_tasks(local_lake, ray_local):
    from jobs.score.listing import list_lake, listing_budget

    fs = fsspec.filesystem("file")
    root = str(local_lake)
    listing = list_lake(root, 8, listing_budget(5))
    expected = [r for r in expected_rows(fs, root, root) if is_image_path(r[0])]
    got = sorted(tuple(r.values()) for r in listing.images.take_all())
    assert got == sorted((*r, bucket_of(r[0], 8)) for r in expected)
    assert listing.files == len(expected_rows(fs, root, root)) and listing.tasks > 1
    assert listing.images.schema().names == ["path", "size", "mtime", "etag", "bucket"]
    assert listing_budget(None).tasks >= 4  # 4 per CPU of the cluster


# ---------------------------------------------------------------------------------------------
# the real S3 server


BUCKET = "fanout"


@pytest.fixture(scope="module")
def s3_lake(s3_env):
    """A bucket of odd keys, a lake of few top-level prefixes and a flat prefix."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    from tests.s3server import make_bucket

    make_bucket(s3_env.endpoint, BUCKET)
    client = boto3.client("s3")
    keys = ["odd/" + k for k in ODD] + [
        f"few/{a}/{b}/{i}.jpg" for a in "xy" for b in range(6) for i in range(3)
    ] + [f"flat/img_{i:05d}.jpg" for i in range(600)] + ["flat/notes.txt", "few/top.jpg"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=b"x"), keys))
    return s3_env


def boto_listing(prefix: str) -> list[tuple]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix)
    return sorted((f"s3://{BUCKET}/{o['Key']}", o["Size"], o["LastModified"].timestamp(),
                   o["ETag"].strip('"')) for p in pages for o in p.get("Contents", []))


def test_s3_listing_exactly_once_against_boto3(s3_lake):
    import boto3
    import s3fs

    # SeaweedFS honours StartAfter, and lists folder by folder: "a/b" before "a+b"
    client = boto3.client("s3")
    page = client.list_objects_v2(Bucket=BUCKET, Prefix="flat/", StartAfter="flat/img_00299",
                                  MaxKeys=2)
    assert [o["Key"] for o in page["Contents"]] == ["flat/img_00299.jpg", "flat/img_00300.jpg"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="odd/a")["Contents"]]
    assert keys.index("odd/a/b") < keys.index("odd/a+b")
    s3fs.S3FileSystem.clear_instance_cache()
    small = dict(pages=1, page_keys=4)
    for prefix, tasks in (("odd", 4), ("odd", 1), ("few", 8), ("flat", 8), ("flat", 1)):
        rows, listed = drain(f"s3://{BUCKET}/{prefix}/", Budget(tasks=tasks, **small))
        assert rows_of(rows) == boto_listing(prefix + "/"), (prefix, tasks)
        assert listed > (1 if tasks > 1 else 0)
    # a glob: the pattern at every depth
    from fiqa_core.listers import _matcher

    pattern = f"s3://{BUCKET}/odd/**/*.jpg"
    rows, _ = drain(pattern, Budget(tasks=4, **small))
    match = _matcher(pattern.removeprefix("s3://"))
    want = [r for r in boto_listing("odd/") if match(r[0].removeprefix("s3://"))]
    assert rows_of(rows) == want and len(want) == 8
    # an empty folder: its marker object alone
    rows, _ = drain(f"s3://{BUCKET}/odd/empty/", Budget(tasks=4, **small))
    assert [r[0] for r in rows_of(rows)] == [f"s3://{BUCKET}/odd/empty/"]


def test_s3_depth_and_key_range_fan_out_in_ray_tasks(s3_lake):
    from jobs.ray_env import init_ray
    from jobs.score.listing import list_lake

    init_ray(None, min_cpus=2)
    proxy = s3_lake.faults
    proxy.clear()
    # few top-level prefixes: split by depth
    listing = list_lake(f"s3://{BUCKET}/few/", 4, Budget(tasks=8, pages=1, page_keys=5))
    images = sorted(listing.images.to_pandas()["path"])
    assert images == [r[0] for r in boto_listing("few/")]
    assert listing.parts >= 8 and listing.driver_files == 1
    # a flat prefix: split by key range, with StartAfter passed through the proxy
    listing = list_lake(f"s3://{BUCKET}/flat/", 4, Budget(tasks=8, pages=2, page_keys=20))
    df = listing.images.to_pandas()
    assert sorted(df["path"]) == [r[0] for r in boto_listing("flat/") if r[0].endswith(".jpg")]
    assert listing.files == 601 and listing.parts > 8 and listing.tasks > 2
    assert list(df["bucket"]) == [bucket_of(p, 4) for p in df["path"]]
    listed = [q for m, path, q in proxy.requests if m == "GET" and "list-type=2" in q]
    assert sum("start-after=" in q for q in listed) > 4


def test_one_listing_task_pages_each_prefix_through_without_start_after():
    from jobs.score.listing import listing_budget

    assert listing_budget(1).pages is None  # S3 Express directory buckets: no StartAfter
    assert listing_budget(8).pages == 10
