"""Leases: one writer per output, on a local disk and on an S3-compatible server."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from fiqa_core.errors import OutputBusy
from fiqa_core.lease import LEASE, Lease, LeaseLost


def _hold(output: str, ttl: float, ready) -> None:
    Lease(output, "holder in a child process", ttl_s=ttl).acquire()
    ready.set()
    time.sleep(600)  # until killed


def test_second_run_is_refused_with_the_holder_named(tmp_path):
    out = str(tmp_path / "out")
    with Lease(out, "fiqa score input=/lake model=/m", ttl_s=30):
        info = json.loads((tmp_path / "out" / LEASE).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "fiqa score input=/lake model=/m"
        with pytest.raises(OutputBusy) as busy:
            Lease(out, "another", ttl_s=30).acquire()
        msg = str(busy.value)
        assert f"pid {os.getpid()}" in msg and "fiqa score input=/lake model=/m" in msg
        assert "expires" in msg and str(tmp_path / "out" / LEASE) in msg
    assert not (tmp_path / "out" / LEASE).exists()  # released
    with Lease(out, "next", ttl_s=30):  # free again
        pass


def test_a_killed_holder_is_taken_over_once_its_lease_expires(tmp_path):
    out = str(tmp_path / "out")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_hold, args=(out, 1.5, ready))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputBusy, match="holder in a child process"):
            Lease(out, "too early", ttl_s=1.5).acquire()
        time.sleep(2.0)  # alive: it renews every ttl/3, so it is still busy
        with pytest.raises(OutputBusy):
            Lease(out, "still too early", ttl_s=1.5).acquire()
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        time.sleep(2.0)  # the dead holder stops renewing; its lease expires
        with Lease(out, "taker", ttl_s=1.5) as lease:
            assert json.loads((tmp_path / "out" / LEASE).read_text())["command"] == "taker"
            lease.check()
    finally:
        if child.is_alive():
            child.kill()


def test_renewal_keeps_a_slow_run_alive_and_a_lost_lease_refuses_to_commit(tmp_path):
    out = str(tmp_path / "out")
    lease = Lease(out, "slow", ttl_s=0.6).acquire()
    try:
        first = json.loads((tmp_path / "out" / LEASE).read_text())["renewed"]
        time.sleep(1.0)  # longer than the ttl: only renewal keeps it
        assert json.loads((tmp_path / "out" / LEASE).read_text())["renewed"] > first
        with pytest.raises(OutputBusy):
            Lease(out, "other", ttl_s=0.6).acquire()
        # another run overwrote the lease (as after a takeover): this one must not commit
        (tmp_path / "out" / LEASE).write_text(json.dumps({"holder": "x", "renewed": time.time(),
                                                          "ttl_s": 60}))
        lease.renew()
        with pytest.raises(LeaseLost, match="not committed"):
            lease.check()
    finally:
        lease.release()
    assert (tmp_path / "out" / LEASE).exists()  # a lost lease is not ours to delete
