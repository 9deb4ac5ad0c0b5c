import datetime as dt

import pytest

from fiqa_core.lake import (
    Budget,
    bucket_of,
    buckets_of,
    facts,
    image_mask,
    is_image_path,
    list_parts,
    plan_listing,
    split_root,
)


def test_image_extensions():
    assert is_image_path("s3://b/x/FACE.JPG") and is_image_path("a.webp")
    assert not is_image_path("notes.txt") and not is_image_path("archive.jpg.zip")
    import pyarrow as pa

    paths = ["a.jpg", "A.JPEG", "x/.jpg", ".png", "x/..jpg", "x/a..jpg", "a.jpg.zip", "d.jpg/",
             "x/.a.png", "b.tIf", "c.jpe", "e.webp.", "g.GiF", "ünï.JPG", "a b.png", "...png",
             "s3://b/k.bmp", "x/y.jpgx", "a.j pg", "tab\t.tiff", "K.jpg", "x.ｊｐｇ"]
    assert image_mask(pa.array(paths)).to_pylist() == [is_image_path(p) for p in paths]


def test_buckets_are_stable_and_spread():
    assert bucket_of("s3://lake/a.jpg", 64) == bucket_of("s3://lake/a.jpg", 64)
    counts = [0] * 8
    for i in range(800):
        counts[bucket_of(f"/lake/img_{i}.jpg", 8)] += 1
    assert min(counts) > 60  # roughly uniform
    assert bucket_of("x", 1) == 0
    paths = [f"s3://lake/ünï/img_{i}.jpg" for i in range(500)]
    for n in (1, 7, 64, 2**40):
        assert buckets_of(paths, n).tolist() == [bucket_of(p, n) for p in paths]


def test_facts_from_each_backend():
    local = facts({"name": "/a.jpg", "size": 10, "type": "file", "mtime": 1700000000.5})
    assert local == {"size": 10, "mtime": 1700000000.5, "etag": None}
    when = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    s3 = facts({"Key": "a.jpg", "size": 7, "ETag": '"abc"', "LastModified": when})
    assert s3 == {"size": 7, "mtime": when.timestamp(), "etag": "abc"}
    gcs = facts({"size": "5", "md5Hash": "xyz", "updated": "2026-11-20T00:00:00Z"})
    assert gcs == {"size": 5, "mtime": when.timestamp(), "etag": "xyz"}


def test_listing_breadth_first_then_in_parts(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "top.jpg").write_bytes(b"1")
    (tmp_path / "a" / "one.png").write_bytes(b"22")
    (tmp_path / "a" / "b" / "two.jpg").write_bytes(b"333")
    (tmp_path / "c" / "three.txt").write_bytes(b"4444")
    files, parts = plan_listing(str(tmp_path), Budget(tasks=1))
    assert files.num_rows == 0 and parts == [str(tmp_path)]  # one task lists it all
    files, parts = plan_listing(str(tmp_path), Budget(tasks=2))
    assert files["path"].to_pylist() == [str(tmp_path / "top.jpg")]
    assert sorted(parts) == [str(tmp_path / "a"), str(tmp_path / "c")]
    below, rest = list_parts(str(tmp_path), sorted(parts), Budget(tasks=2))
    assert sorted(zip(below["path"].to_pylist(), below["size"].to_pylist(), strict=True)) == [
        (str(tmp_path / "a" / "b" / "two.jpg"), 3),
        (str(tmp_path / "a" / "one.png"), 2),
        (str(tmp_path / "c" / "three.txt"), 4),
    ] and rest == []
    files, parts = plan_listing(str(tmp_path), Budget(tasks=3))  # no level holds 3 folders
    assert files.num_rows == 4 and parts == []
    # a glob keeps only what matches, at every depth
    fs, root, pattern = split_root(f"{tmp_path}/**/*.jpg")
    assert root == str(tmp_path) and pattern.endswith("*.jpg")
    files, parts = plan_listing(f"{tmp_path}/**/*.jpg", Budget(tasks=2))
    assert files["path"].to_pylist() == [str(tmp_path / "top.jpg")]
    below, _ = list_parts(f"{tmp_path}/**/*.jpg", parts, Budget(tasks=2))
    assert below["path"].to_pylist() == [str(tmp_path / "a" / "b" / "two.jpg")]
    with pytest.raises(FileNotFoundError, match="no such folder or prefix"):
        plan_listing(str(tmp_path / "nope"), Budget())


def test_decodes_are_bounded_by_decode_slots_while_reads_overlap(tmp_path):
    import threading
    import time

    from fiqa_core.images import Decoded
    from fiqa_core.lake import load_images

    paths = []
    for i in range(12):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]))
        paths.append(str(tmp_path / f"{i}.bin"))
    lock, running, most = threading.Lock(), [0], [0]

    def decode(data: bytes) -> Decoded:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return Decoded("ok", str(data[0]))

    out = load_images(paths + [str(tmp_path / "gone.bin")], decode, threads=6, decode_slots=1)
    assert most[0] == 1  # one decode at a time: the CPU the caller reserved
    assert [d.error for d in out[:12]] == [str(i) for i in range(12)]  # in order
    assert out[12].status == "missing"
    most[0] = 0
    load_images(paths, decode, threads=6)  # unbounded: decodes overlap on the threads
    assert most[0] > 1
    names = set()
    for _ in range(4):  # one pool per size per process, kept for the next batch
        names |= {d.error for d in load_images(paths, lambda d: Decoded(
            "ok", threading.current_thread().name), 6)}
    assert 1 < len(names) <= 6
