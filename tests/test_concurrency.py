"""Two runs on one output, as an overrunning cron or a resubmitted RayJob makes them: the
second is refused (exit 3, the holder named), a killed holder is taken over once its lease
expires, and a partition with duplicated rows is repaired. Each run is its own process."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from fiqa_core import Calibration, create_model, save_checkpoint
from fiqa_core.lease import LEASE, Lease
from jobs import score as score_job
from jobs.cli import main as cli_main
from tests import imagegen
from tests.test_score import cfg, image_files, read_partition

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "student")
    save_checkpoint(create_model("student-edgenext-xxs", image_size=64), path,
                    calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    return path


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    for i in range(4):
        imagegen.write_labeled_set(root / f"part{i}", 40, seed=i, size=(40, 48))
    return root


def start(*argv, lease_s: float = 60.0) -> subprocess.Popen:
    """``fiqa ARGV`` in a new process (and session, so a test can kill its whole group)."""
    env = {**os.environ, "FIQA_LEASE_S": str(lease_s), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first:\n{proc.stdout.read()}")
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


def settings(lake, checkpoint, out):
    return [f"input={lake}", f"model={checkpoint}", f"output={out}", "buckets=8",
            "precision=fp32", "scorers=1"]


def test_two_runs_started_together_write_each_row_once(tmp_path, lake, checkpoint):
    out = tmp_path / "pl"
    a = start("pseudo-label", *settings(lake, checkpoint, out))
    b = start("pseudo-label", *settings(lake, checkpoint, out))
    results = {}
    for name, p in (("a", a), ("b", b)):
        results[name] = (p.wait(timeout=300), p.stdout.read())
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 3], results
    loser = next(text for code, text in results.values() if code == 3)
    assert f"busy: {out} is being written by another run: fiqa pseudo-label" in loser
    assert "Traceback" not in loser and "expires" in loser
    df = read_partition(str(out))
    assert sorted(df["path"]) == image_files(lake)  # each image exactly once
    assert json.loads((out / "_SUCCESS").read_text())["rows"] == len(df)
    assert not (out / LEASE).exists()  # released by the winner


def test_a_run_started_mid_way_is_refused_and_the_first_completes(tmp_path, lake, checkpoint):
    out = tmp_path / "pl"
    first = start("pseudo-label", *settings(lake, checkpoint, out))
    wait_for(out / LEASE, first)
    assert cli_main(["pseudo-label", *settings(lake, checkpoint, out)]) == 3
    assert first.wait(timeout=300) == 0, first.stdout.read()
    assert sorted(read_partition(str(out))["path"]) == image_files(lake)
    # a run after it finished: nothing to do, exit 0
    assert cli_main(["pseudo-label", *settings(lake, checkpoint, out)]) == 0


def test_a_killed_run_is_taken_over_by_the_next_one(tmp_path, lake, checkpoint):
    out = tmp_path / "pl"
    first = start("pseudo-label", *settings(lake, checkpoint, out))
    wait_for(out / LEASE, first)
    time.sleep(3)  # let it get going
    os.killpg(first.pid, signal.SIGKILL)  # the driver and what it started: no cleanup
    first.wait()
    assert (out / LEASE).exists() and not (out / "_SUCCESS").exists()
    # same host, holder process gone: taken over at once, without waiting for the expiry
    # (a holder on another host is waited for: tests/test_lease.py)
    summary = score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)
    df = read_partition(str(out))
    assert sorted(df["path"]) == image_files(lake) and summary["rows"] == len(df)
    assert not (out / LEASE).exists()


def test_duplicated_rows_are_repaired_and_unlisted_rows_refused(tmp_path, lake, checkpoint,
                                                                caplog):
    out = tmp_path / "pl"
    local = tmp_path / "lake"
    shutil.copytree(lake, local)
    score_job.run(cfg(input=local, model=checkpoint, output=out), nightly=False)
    # what two overlapping runs of an older version or a crash mid-repair leave: a
    # bucket's file twice
    (out / "_SUCCESS").unlink()
    shard = next((out / "bucket=0").glob("*.parquet"))
    doubled = len(pq.read_table(shard))
    shutil.copy(shard, shard.with_name("copy-" + shard.name))
    summary = score_job.run(cfg(input=local, model=checkpoint, output=out), nightly=False)
    df = read_partition(str(out))
    assert sorted(df["path"]) == image_files(local) and summary["rows"] == len(df)
    assert f"removed {doubled} duplicate row(s)" in caplog.text
    assert len(list((out / "bucket=0").glob("*.parquet"))) == 1  # repaired into one file
    # rows of a file this run does not list: refused, nothing removed, the fix named
    (out / "_SUCCESS").unlink()
    gone = pq.read_table(next((out / "bucket=1").glob("*.parquet"))).column("path")[0].as_py()
    os.remove(gone)
    assert cli_main(["pseudo-label", *settings(local, checkpoint, out)]) == 2
    assert gone in set(read_partition(str(out))["path"]) and not (out / "_SUCCESS").exists()


def test_rows_of_another_model_are_refused_with_the_fix(tmp_path, lake, checkpoint):
    out = tmp_path / "pl"
    score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)
    (out / "_SUCCESS").unlink()
    other = str(tmp_path / "other")
    torch.manual_seed(1)
    save_checkpoint(create_model("student-edgenext-xxs", image_size=64), other,
                    calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    assert cli_main(["pseudo-label", f"input={lake}", f"model={other}", f"output={out}",
                     "buckets=8"]) == 2
    df = read_partition(str(out))
    assert df["model"].nunique() == 1  # nothing mixed in


def _hold(output: str, ready) -> None:
    Lease(output, "fiqa train (a run in another process)", ttl_s=60).acquire()
    ready.set()
    time.sleep(600)


@pytest.mark.parametrize("command", ["train", "self-train"])
def test_train_and_round_refuse_an_output_another_run_holds(tmp_path, command, capsys):
    out = tmp_path / "out"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out), ready))
    holder.start()
    try:
        assert ready.wait(60)
        pd.DataFrame({"path": ["a.jpg"], "score": [3.0]}).to_csv(tmp_path / "l.csv", index=False)
        args = ([f"labels={tmp_path / 'l.csv'}", f"output={out}", "pretrained=false"]
                if command == "train"
                else [f"output={out}", f"labels={tmp_path / 'l.csv'}",
                      f"unlabeled_a={tmp_path}", f"unlabeled_b={tmp_path}"])
        assert cli_main([command, *args]) == 3
        printed = capsys.readouterr().out
        assert f"pid {holder.pid}" in printed and "fiqa train (a run in another process)" in printed
    finally:
        holder.kill()
        holder.join()
