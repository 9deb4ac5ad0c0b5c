"""Faults of a real S3 server, injected on the wire (SeaweedFS behind the fault proxy of
tests/s3server.py, so the job's driver and every Ray worker meet them): what a night
leaves behind when listing, planning, image reads, writes or the commit fail, or when the
server dies mid-write. Throughout: a committed night is never modified, a failed run exits
1 with no ``_SUCCESS``, and the rerun completes with each image exactly once.

Clients try 3 times here (``AWS_MAX_ATTEMPTS``, set by the ``s3_env`` fixture): a fault
that fires once per object is retried away; one that fires every time outlasts them.
"""

import io
import json
import threading
import time

import pyarrow.parquet as pq
import pytest
import torch

from fiqa_core import Calibration, create_model, save_checkpoint
from jobs.cli import main as cli_main
from tests import imagegen
from tests.s3server import Fault, make_bucket

BUCKET = "faults"
IMAGES = 16


@pytest.fixture(scope="module")
def s3(s3_env):
    make_bucket(s3_env.endpoint, BUCKET)
    return s3_env


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The student, exported to ONNX: its scoring actors are ready in 0.1 s, not the 5 s
    of importing torch, and these faults do not depend on the engine."""
    from fiqa_core import export_onnx

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save_checkpoint(create_model("student-edgenext-xxs", image_size=32), str(folder / "ckpt"),
                    calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    export_onnx(str(folder / "ckpt"), str(folder / "student.onnx"))
    return str(folder / "student.onnx")


class Lake:
    """A case's lake and nightly output in the bucket, read back without the proxy."""

    def __init__(self, s3, name: str, tmp_path, model: str):
        self.s3, self.name, self.model = s3, name, model
        self.client = s3.client(direct=True)
        local = tmp_path / "lake"
        imagegen.write_labeled_set(local, IMAGES, seed=3, size=(40, 48))
        self.images = []
        for f in sorted(local.rglob("*.jpg")):
            key = f"{name}/lake/{f.relative_to(local)}"
            self.client.upload_file(str(f), BUCKET, key)
            self.images.append(f"s3://{BUCKET}/{key}")
        self.output = f"s3://{BUCKET}/{name}/scores"

    def night(self, date: str) -> int:
        return cli_main(["score", f"input=s3://{BUCKET}/{self.name}/lake/",
                         f"model={self.model}", f"output={self.output}", f"run_date={date}",
                         "buckets=4", "scorers=1", "decode_batch_size=8"])

    def prefix(self, date: str) -> str:
        return f"{self.name}/scores/date={date}/"

    def objects(self, date: str) -> dict[str, tuple[int, str]]:
        """Every object of a night: key -> (size, ETag)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=self.prefix(date))
        return {o["Key"]: (o["Size"], o["ETag"]) for p in pages for o in p.get("Contents", [])}

    def success(self, date: str) -> dict | None:
        key = self.prefix(date) + "_SUCCESS"
        if key not in self.objects(date):
            return None
        return json.loads(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def rows(self, date: str) -> list[dict]:
        rows = []
        for key in self.objects(date):
            if key.endswith(".parquet"):
                body = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                rows += pq.read_table(io.BytesIO(body)).to_pylist()
        return rows

    def complete(self, date: str) -> dict:
        """The night's _SUCCESS, after checking it counts every image exactly once."""
        summary, rows = self.success(date), self.rows(date)
        assert summary is not None, f"{date}: no _SUCCESS"
        assert sorted(r["path"] for r in rows) == self.images  # each image exactly once
        assert summary["rows"] == len(rows) == IMAGES
        return summary


def test_a_night_that_cannot_read_the_night_before_changes_nothing(s3, model, tmp_path):
    """The fault that destroyed a night: reads of the previous night's Parquet files fail
    while the next night plans from it. Before: every file of the previous night removed
    as a "partial shard", exit 0, everything rescored."""
    lake = Lake(s3, "planning", tmp_path, model)
    # night 1: listing, image reads, result writes and the commit each fail once, retried
    once = [s3.faults.add(Fault(method=m, key=k, query=q)) for m, k, q in (
        ("GET", None, "list-type"), ("GET", r"planning/lake/.*\.jpg$", None),
        ("PUT", r"planning/scores/.*\.parquet$", None), ("PUT", r"/_SUCCESS$", None))]
    assert lake.night("2026-11-01") == 0
    assert [r.fired > 0 for r in once] == [True] * 4 and once[1].fired == IMAGES
    s3.faults.clear()
    first = lake.complete("2026-11-01")
    assert first["by_status"] == {"ok": IMAGES}
    before = lake.objects("2026-11-01")
    files = [k for k in before if k.endswith(".parquet")]

    # once per file: retried by the client, the night reuses every row
    once = s3.faults.add(Fault(method="GET", key=r"planning/scores/date=2026-11-01/.*parquet$"))
    assert lake.night("2026-11-02") == 0
    assert once.fired >= len(files) > 0
    assert lake.complete("2026-11-02")["reused"] == IMAGES
    assert lake.objects("2026-11-01") == before and lake.success("2026-11-01") == first

    # failing beyond every retry: the run fails (exit 1) and removes nothing
    s3.faults.clear()
    before2 = lake.objects("2026-11-02")
    s3.faults.add(Fault(method="GET", key=r"planning/scores/date=2026-11-02/.*parquet$",
                        times=None))
    assert lake.night("2026-11-03") == 1
    assert lake.success("2026-11-03") is None
    assert lake.objects("2026-11-02") == before2 and lake.objects("2026-11-01") == before
    s3.faults.clear()
    assert lake.night("2026-11-03") == 0  # the rerun completes, exactly once
    assert lake.complete("2026-11-03")["reused"] == IMAGES


def test_listing_and_image_reads_that_fail(s3, model, tmp_path):
    lake = Lake(s3, "reads", tmp_path, model)
    broken = sorted(lake.images)[:2]
    keys = "|".join(p.split("/", 3)[3] for p in broken)
    listing = s3.faults.add(Fault(method="GET", query="list-type", times=1))
    reads = s3.faults.add(Fault(method="GET", key=r"reads/lake/.*\.jpg$", times=1))
    lost = s3.faults.add(Fault(method="GET", key=rf"^{BUCKET}/({keys})$", times=None))
    assert lake.night("2026-11-01") == 0  # retried once each; two never readable
    assert listing.fired == 1 and reads.fired == IMAGES and lost.fired > 2
    summary = lake.complete("2026-11-01")  # rows that say what was wrong, none dropped
    assert summary["by_status"] == {"ok": IMAGES - 2, "read_error": 2}
    errors = {r["path"]: r["error"] for r in lake.rows("2026-11-01") if r["status"] != "ok"}
    assert sorted(errors) == broken
    assert all("reduce your request rate" in e for e in errors.values())

    # listing that keeps failing: exit 1, nothing written
    s3.faults.clear()
    s3.faults.add(Fault(method="GET", query="list-type", times=None))
    assert lake.night("2026-11-02") == 1
    s3.faults.clear()
    assert lake.objects("2026-11-02") == {}
    # the rerun: the two read errors are read again (never reused), the rest reused
    assert lake.night("2026-11-02") == 0
    summary = lake.complete("2026-11-02")
    assert summary["by_status"] == {"ok": IMAGES} and summary["reused"] == IMAGES - 2


def test_writes_and_the_commit_that_fail_and_a_file_cut_short(s3, model, tmp_path):
    lake = Lake(s3, "writes", tmp_path, model)
    date = "2026-11-01"
    # every result write fails: exit 1, no _SUCCESS
    s3.faults.add(Fault(method="PUT", key=r"writes/scores/.*\.parquet$", times=None))
    assert lake.night(date) == 1
    s3.faults.clear()
    assert lake.success(date) is None

    # the commit fails after every row is written: exit 1, the rows stay
    s3.faults.add(Fault(method="PUT", key=r"writes/scores/.*/_SUCCESS$", times=None))
    assert lake.night(date) == 1
    s3.faults.clear()
    assert lake.success(date) is None and len(lake.rows(date)) == IMAGES

    # what a writer killed mid-upload on a store without atomic publishing leaves: a
    # Parquet file without its footer. The rerun removes it (its own partition, under its
    # lease), redoes its rows, and commits: each image exactly once
    key = next(k for k in lake.objects(date) if k.endswith(".parquet"))
    whole = lake.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    lake.client.delete_object(Bucket=BUCKET, Key=key)
    cut = key.rsplit("/", 1)[0] + "/cut.parquet"
    lake.client.put_object(Bucket=BUCKET, Key=cut, Body=whole[: len(whole) // 2])
    assert lake.night(date) == 0
    assert cut not in lake.objects(date)
    assert lake.complete(date)["scored"] == IMAGES


def test_the_server_killed_mid_write(s3, model, tmp_path, monkeypatch):
    """SeaweedFS killed when the first result file arrives, restarted on the same data 2 s
    later: the run recovers or fails (exit 1, no _SUCCESS); the rerun completes once, and
    the committed night before is intact. A run that failed while the store was down may
    not have released its lease: the rerun waits for it to expire (3 s here)."""
    monkeypatch.setenv("FIQA_LEASE_S", "3")
    lake = Lake(s3, "killed", tmp_path, model)
    assert lake.night("2026-11-01") == 0
    before = lake.objects("2026-11-01")
    killed, restarted = threading.Event(), threading.Event()

    def kill(request):
        if killed.is_set():  # once, whichever file comes first
            return None
        killed.set()
        s3.kill()
        threading.Timer(2.0, lambda: (s3.restart(), restarted.set())).start()
        return "reset"

    s3.faults.add(Fault(method="PUT", key=r"killed/scores/date=2026-11-02/.*\.parquet$",
                        times=None, action=kill))
    code = lake.night("2026-11-02")
    assert killed.is_set() and restarted.wait(120)
    s3.faults.clear()
    assert code in (0, 1)
    if code == 1:
        assert lake.success("2026-11-02") is None
        code = lake.night("2026-11-02")
        if code == 3:  # busy: the failed run's lease, not released while the store was down
            time.sleep(3.5)
            code = lake.night("2026-11-02")
        assert code == 0
    lake.complete("2026-11-02")
    assert lake.objects("2026-11-01") == before
