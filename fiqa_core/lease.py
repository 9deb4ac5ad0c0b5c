"""One writer per output: a lease file with a heartbeat, taken with an atomic create.

Two jobs that would write the same output (a scoring partition, a checkpoint, a round)
must not interleave. The first takes ``<output>/_LEASE``; a second one is refused at once
with :class:`OutputBusy`, which names the holder (host, process, command, since when) and
when its lease runs out. The holder renews the lease every third of ``ttl_s``; a holder
that died stops renewing, and the next run takes the lease over once it has not been
renewed for ``ttl_s`` seconds (at once when the holder ran on the same host and its
process is gone). Expiry compares the holder's clock with the reader's: hosts sharing
outputs need synchronised clocks (NTP).

Atomicity comes from the store (:mod:`fiqa_core.cas`): ``flock`` on local disks,
conditional writes on S3-compatible stores (probed once per bucket); any other store, or an
S3 endpoint that ignores the conditions, is refused unless ``FIQA_UNSAFE_LEASE=1``.

``FIQA_LEASE_S`` sets ``ttl_s`` (default 60 s): the longest a dead holder blocks a rerun.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from . import storage
from .cas import store_for
from .errors import FiqaError, LeaseLost, OutputBusy

log = logging.getLogger("fiqa.lease")
LEASE = "_LEASE"
DEFAULT_TTL_S = 60.0


def default_ttl() -> float:
    raw = os.environ.get("FIQA_LEASE_S")
    if raw is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        raise FiqaError(f"FIQA_LEASE_S must be a number of seconds, got {raw!r}") from None
    if ttl <= 0:
        raise FiqaError(f"FIQA_LEASE_S must be > 0, got {raw!r}")
    return ttl


def _now() -> float:
    """Wall-clock seconds, stamped in the lease (other hosts read it)."""
    return time.time()


def _monotonic() -> float:
    """This process's own clock, for how long ago it last renewed (tests inject both)."""
    return time.monotonic()


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


class Lease:
    """The right to write ``output``, held while the ``with`` block runs.

    Args:
        output: The output folder (local path or URI) that one run at a time may write.
        what: What the holder runs, for the message a refused run prints.
        ttl_s: Seconds without renewal after which the lease counts as dead.
    """

    def __init__(self, output: str, what: str, ttl_s: float | None = None):
        self.output = output
        self.uri = storage.join(output, LEASE)
        self.what = what
        self.ttl_s = ttl_s if ttl_s is not None else default_ttl()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = _now()
        self._store = None
        self._token: str | None = None
        self._lock = threading.Lock()  # the token, between the renew thread and the caller
        self._last_renewed = _monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": self.what,
                "argv": " ".join(sys.argv),
                "started": _stamp(self.started),
                "renewed": _now(),
                "ttl_s": self.ttl_s,
            },
            indent=1,
        ).encode()

    def _ours(self) -> str | None:
        """The current token if the stored lease is this run's (a retried write that
        succeeded after all), else None."""
        current = self._store.read()
        if current is not None and _parse(current[0]).get("holder") == self.holder:
            return current[1]
        return None

    def acquire(self) -> Lease:
        self._store = store = store_for(self.uri)
        token = store.create(self._body()) or self._ours()
        if token is None:
            current = store.read()
            if current is None:  # released between our create and read: try once more
                token = store.create(self._body())
                if token is None:
                    raise OutputBusy(f"{self.output}: another run took its lease just now")
            else:
                data, old = current
                info = _parse(data)
                age = _now() - float(info.get("renewed", 0))
                dead = _holder_dead_here(info)
                if age <= float(info.get("ttl_s", self.ttl_s)) and not dead:
                    raise OutputBusy(_busy_message(self.output, self.uri, info, age))
                token = store.swap(old, self._body()) or self._ours()
                if token is None:
                    raise OutputBusy(f"{self.output}: another run took over its expired lease "
                                     "just now")
                log.warning("%s: took over the lease of %s (%s): %s", self.output,
                            info.get("holder"), info.get("command"),
                            "its process is gone" if dead else f"not renewed for {age:.0f} s")
        self._token, self._last_renewed = token, _monotonic()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="fiqa-lease")
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except Exception as e:  # a store hiccup: try again next period
                log.warning("%s: could not renew the lease (%s)", self.output, e)

    def renew(self) -> None:
        with self._lock:
            if self.lost or self._token is None:
                return
            token = self._store.swap(self._token, self._body()) or self._ours()
            if token is not None:
                self._token, self._last_renewed = token, _monotonic()
            else:
                self.lost = True
                log.error("%s: this run's lease was taken over by another run", self.output)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the stored lease is still this run's and was
        renewed within ``ttl_s`` (call before committing or changing what others wrote)."""
        with self._lock:
            stale = _monotonic() - self._last_renewed > self.ttl_s
            if not self.lost and (stale or self._ours() is None):
                self.lost = True
            if self.lost:
                raise LeaseLost(
                    f"{self.output}: this run's lease was not renewed for over "
                    f"{self.ttl_s:.0f} s or was taken over by another run; this run's "
                    "results are not committed. Run it again to resume."
                )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        with self._lock:
            if self._store is not None and self._token is not None and not self.lost:
                try:
                    self._store.delete(self._token)
                except Exception as e:  # the store is failing: the lease expires instead
                    log.warning("%s: could not release the lease (%s); the next run takes it "
                                "over once it expires, %.0f s after its last renewal",
                                self.output, e, self.ttl_s)
            self._token = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_dead_here(info: dict) -> bool:
    """Whether the holder ran on this host and its process is gone (no need to wait)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _parse(data: bytes) -> dict:
    try:
        info = json.loads(data)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}  # unreadable: counts as never renewed, so it can be taken over


def _busy_message(output: str, uri: str, info: dict, age: float) -> str:
    ttl = float(info.get("ttl_s", DEFAULT_TTL_S))
    return (
        f"{output} is being written by another run: {info.get('command', '?')} "
        f"(host {info.get('host', '?')}, pid {info.get('pid', '?')}, since "
        f"{info.get('started', '?')}; lease renewed {age:.0f} s ago). Wait for it to finish. "
        f"If it is dead, its lease expires {max(0.0, ttl - age):.0f} s from now and the next "
        f"run takes over and resumes; to take over at once, make sure it is gone and delete {uri}"
    )
