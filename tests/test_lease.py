"""Leases: one writer per output, on a local disk and on an S3-compatible server."""

import json
import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from fiqa_core.errors import LeaseLost, OutputBusy
from fiqa_core.lease import LEASE, Lease


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


class Clock:
    """Both of the lease's clocks (its wall-clock stamps and its own monotonic one), moved
    only by the test."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch):
    from fiqa_core import lease

    c = Clock()
    monkeypatch.setattr(lease, "_now", c)
    monkeypatch.setattr(lease, "_monotonic", c)
    return c


def test_a_killed_holder_is_taken_over_at_once_on_its_host(tmp_path):
    out = str(tmp_path / "out")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_hold, args=(out, 60, ready))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputBusy, match="holder in a child process"):
            Lease(out, "too early", ttl_s=60).acquire()
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        with Lease(out, "taker", ttl_s=60) as lease:  # its pid is gone: no wait for 60 s
            assert json.loads((tmp_path / "out" / LEASE).read_text())["command"] == "taker"
            lease.check()
    finally:
        if child.is_alive():
            child.kill()


def test_a_holder_on_another_host_is_taken_over_when_its_lease_expires(tmp_path, clock):
    out = tmp_path / "out"
    out.mkdir()
    stale = {"holder": "node-7:123:ab", "host": "node-7", "pid": 123, "command": "fiqa score",
             "started": "2026-11-28T01:00:00+00:00", "renewed": clock(), "ttl_s": 30.0}
    (out / LEASE).write_text(json.dumps(stale))
    with pytest.raises(OutputBusy, match=r"fiqa score \(host node-7, pid 123, since 2026"):
        Lease(str(out), "next", ttl_s=30).acquire()
    clock.advance(29.9)  # within its ttl: still its own
    with pytest.raises(OutputBusy):
        Lease(str(out), "next", ttl_s=30).acquire()
    clock.advance(0.2)  # not renewed for longer than its ttl: dead
    with Lease(str(out), "next", ttl_s=30):
        assert json.loads((out / LEASE).read_text())["command"] == "next"


def test_renewal_keeps_a_slow_run_alive_and_a_lost_lease_refuses_to_commit(tmp_path, clock):
    out = str(tmp_path / "out")
    lease = Lease(out, "slow", ttl_s=30).acquire()
    try:
        first = json.loads((tmp_path / "out" / LEASE).read_text())["renewed"]
        for _ in range(4):  # 40 s in all, longer than the ttl: only renewal keeps it
            clock.advance(10)
            lease.renew()
        assert json.loads((tmp_path / "out" / LEASE).read_text())["renewed"] == first + 40
        with pytest.raises(OutputBusy):
            Lease(out, "other", ttl_s=30).acquire()
        lease.check()  # renewed 0 s ago: still ours
        # another run overwrote the lease (as after a takeover): this one must not commit
        (tmp_path / "out" / LEASE).write_text(json.dumps({"holder": "x", "renewed": clock(),
                                                          "ttl_s": 60}))
        lease.renew()
        with pytest.raises(LeaseLost, match="not committed"):
            lease.check()
    finally:
        lease.release()
    assert (tmp_path / "out" / LEASE).exists()  # a lost lease is not ours to delete


def test_the_renewal_thread_renews_every_third_of_the_ttl(tmp_path, clock):
    class Ticks:  # the thread's wait: three periods pass, then the lease is released
        def __init__(self):
            self.waits = []

        def wait(self, seconds):
            self.waits.append(seconds)
            clock.advance(seconds)
            return len(self.waits) > 3

    lease = Lease(str(tmp_path / "out"), "slow", ttl_s=30)
    lease._renew_loop = lambda: None  # no thread: the test runs the loop itself
    lease.acquire()
    del lease._renew_loop
    first = json.loads((tmp_path / "out" / LEASE).read_text())["renewed"]
    lease._stop = ticks = Ticks()
    lease._renew_loop()
    assert ticks.waits == [10.0] * 4
    assert json.loads((tmp_path / "out" / LEASE).read_text())["renewed"] == first + 30
    lease.check()
    lease._stop = threading.Event()
    lease.release()


def test_a_run_that_could_not_renew_for_longer_than_its_ttl_does_not_commit(tmp_path, clock):
    """Its store failed meanwhile, say: others may have taken the output over by now."""
    with Lease(str(tmp_path / "out"), "stalled", ttl_s=30) as lease:
        clock.advance(29)
        lease.check()
        clock.advance(2)  # 31 s since its last renewal
        with pytest.raises(LeaseLost, match="not renewed for over 30 s"):
            lease.check()


def test_a_lost_lease_is_exit_status_1_and_busy_is_3(capsys):
    from fiqa_core.errors import OutputBusy as Busy
    from jobs.cli import run_job

    def lost():
        raise LeaseLost("/out: this run's lease was taken over")

    def busy():
        raise Busy("/out is being written by another run")

    assert run_job("fiqa score", lost) == 1
    assert run_job("fiqa score", busy) == 3
    printed = capsys.readouterr().out
    assert "fiqa score: /out: this run's lease was taken over" in printed
    assert "fiqa score: busy: /out is being written" in printed and "Traceback" not in printed


def test_the_exporting_train_worker_checks_its_driver_still_holds_the_output(tmp_path):
    from jobs.train.worker import _check_lease

    with Lease(str(tmp_path), "fiqa train", ttl_s=30) as lease:
        _check_lease(str(tmp_path), lease.holder)  # ours: export
        with pytest.raises(LeaseLost, match="checkpoint is not written"):
            _check_lease(str(tmp_path), "another-host:1:deadbeef")
    with pytest.raises(LeaseLost):  # released (or never taken): no export either
        _check_lease(str(tmp_path), lease.holder)


def test_a_store_without_conditional_writes_is_refused_unless_opted_in(monkeypatch, caplog):
    from fiqa_core.errors import ConfigError

    out = "memory://leases/scores/date=2026-11-28"
    monkeypatch.delenv("FIQA_UNSAFE_LEASE", raising=False)
    with pytest.raises(ConfigError, match=r"memory:// has no conditional writes.*"
                       r"FIQA_UNSAFE_LEASE=1 to accept the risk"):
        Lease(out, "fiqa score").acquire()
    monkeypatch.setenv("FIQA_UNSAFE_LEASE", "1")
    with Lease(out, "fiqa score", ttl_s=30):
        with pytest.raises(OutputBusy, match="fiqa score"):  # the refusal still holds
            Lease(out, "another", ttl_s=30).acquire()
    assert "taking the lease with plain writes" in caplog.text


def test_an_s3_endpoint_that_ignores_conditions_is_refused(monkeypatch):
    """What the JuiceFS S3 gateway does: every conditional PUT succeeds. The probe sees a
    second If-None-Match: * create succeed and refuses the store."""
    import fsspec

    from fiqa_core import cas
    from fiqa_core.errors import ConfigError

    written = {}

    def ignoring(self, method, key=None, **kwargs):
        key = key or self.fs.split_path(self.path)[1]
        if method == "put_object":
            written[key] = kwargs["Body"]
            return {"ETag": f'"{len(written)}"'}
        written.pop(key, None)
        return {}

    monkeypatch.setattr(cas.S3Store, "_call", ignoring)
    monkeypatch.setattr(fsspec.filesystem("s3").__class__, "makedirs",
                        lambda self, path, exist_ok=False: None)
    monkeypatch.delenv("FIQA_UNSAFE_LEASE", raising=False)
    monkeypatch.setattr(cas, "_probed", {})
    with pytest.raises(ConfigError, match=r"ignores conditional writes: it accepted a create "
                       r"\(If-None-Match: \*\) over an existing object.*FIQA_UNSAFE_LEASE=1"):
        cas.store_for("s3://gateway-bucket/scores/_LEASE")
    assert written == {}  # the probe object was removed
