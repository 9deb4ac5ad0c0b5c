"""A run's verify and commit steps, without Ray: one row per image or nothing committed,
and ``_SUCCESS`` written only while the lease is still the run's."""

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fiqa_core.errors import InputError, LeaseLost
from fiqa_core.lease import LEASE, Lease
from jobs.score.finish import commit, verify_rows
from jobs.score.schema import OUTPUT_SCHEMA, arrow


def _write(part, name: str, paths: list[str], bucket: int = 0) -> None:
    folder = part / f"bucket={bucket}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame({"path": paths, "score": 3.0, "raw_score": 0.1, "model": "m",
                         "pipeline": "pl-x", "status": "ok", "reused": False,
                         "scored_at": "2026-12-02T00:00:00+00:00"})
    schema = [f for f in OUTPUT_SCHEMA if f.name != "bucket"]
    pq.write_table(arrow(rows, pa.schema(schema)), folder / name)


def _never() -> dict:
    raise AssertionError("no repair was needed")


def test_verify_lists_once_and_names_every_file_in_the_manifest(tmp_path):
    part = tmp_path / "date=2026-12-02"
    _write(part, "a.parquet", ["/l/1.jpg", "/l/2.jpg"])
    _write(part, "b.parquet", ["/l/3.jpg"], bucket=1)
    (part / "bucket=1" / ".b2.parquet.abc.tmp").write_bytes(b"half")  # a lost write task's
    (part / "_LEASE").write_text("{}")  # bookkeeping: not data
    summary = verify_rows(str(part), 3, _never)
    assert (summary["rows"], summary["files"], summary["by_status"]) == (3, 2, {"ok": 3})
    assert [(f["name"], f["rows"]) for f in summary["manifest"]] == [
        ("bucket=0/a.parquet", 2), ("bucket=1/b.parquet", 1)]
    assert summary["manifest"][0]["size"] == (part / "bucket=0" / "a.parquet").stat().st_size
    assert not (part / "bucket=1" / ".b2.parquet.abc.tmp").exists()
    assert "rows_by_file" not in summary


def test_verify_repairs_duplicates_and_refuses_what_it_cannot_account_for(tmp_path):
    part = tmp_path / "p"
    _write(part, "a.parquet", ["/l/1.jpg", "/l/2.jpg"])
    _write(part, "b.parquet", ["/l/2.jpg"])  # an image's row twice

    def repair() -> dict:
        (part / "bucket=0" / "b.parquet").unlink()
        return {"listed": 2, "duplicates": 1, "unlisted": 0, "example": None}

    assert verify_rows(str(part), 2, repair)["rows"] == 2
    # a path listed twice: as many rows as listed, yet one path twice: repaired all the same
    _write(part, "b.parquet", ["/l/2.jpg"])
    fixed = verify_rows(str(part), 3, repair)
    assert (fixed["rows"], fixed["images"], fixed["duplicate_rows"]) == (2, 2, 0)
    # rows of files the run did not list: refused, nothing removed
    _write(part, "c.parquet", ["/elsewhere/9.jpg"])
    with pytest.raises(InputError, match=r"holds 1 row\(s\) of files this run did not list "
                       r"\(e.g. /elsewhere/9.jpg\).*Nothing was removed"):
        verify_rows(str(part), 2, lambda: {"listed": 2, "duplicates": 0, "unlisted": 1,
                                           "example": "/elsewhere/9.jpg"})
    assert (part / "bucket=0" / "c.parquet").exists()
    # a repair that leaves the count off
    with pytest.raises(InputError, match="3 rows of 3 images for 2 listed images after repair"):
        verify_rows(str(part), 2, lambda: {"listed": 2, "duplicates": 0, "unlisted": 0,
                                           "example": None})


def test_verify_refuses_a_file_the_run_did_not_write(tmp_path):
    part = tmp_path / "p"
    _write(part, "a.parquet", ["/l/1.jpg"])
    (part / "bucket=0" / "notes.txt").write_text("someone's")
    with pytest.raises(InputError, match=r"holds files this run did not write "
                       r"\(bucket=0/notes.txt\): nothing was committed"):
        verify_rows(str(part), 1, _never)


def test_commit_writes_success_only_under_the_runs_own_lease(tmp_path, capsys):
    part = tmp_path / "out" / "date=2026-12-02"
    _write(part, "a.parquet", ["/l/1.jpg"])
    facts = {"images": 1, "seconds": 2.0, "skipped_non_image": 0, "model": "m",
             "previous_damaged": []}
    with Lease(str(part), "fiqa score", ttl_s=30) as lease:
        summary = {**verify_rows(str(part), 1, _never), **facts}
        done = commit(str(part), summary, lease, str(tmp_path / "out"))
    assert json.loads((part / "_SUCCESS").read_text()) == done and done["images_per_s"] == 0.5
    assert "Scored 1 images" in capsys.readouterr().out
    other = tmp_path / "other"
    _write(other, "a.parquet", ["/l/1.jpg"])
    with Lease(str(other), "fiqa score", ttl_s=30) as lease:
        summary = {**verify_rows(str(other), 1, _never), **facts}
        (other / LEASE).write_text(json.dumps({"holder": "another run", "ttl_s": 30}))
        with pytest.raises(LeaseLost, match="not committed"):
            commit(str(other), summary, lease, str(tmp_path))
    assert not (other / "_SUCCESS").exists()


def test_verify_and_commit_import_no_ray():
    code = "import sys, jobs.score.finish; print('ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
