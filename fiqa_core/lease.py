"""One writer per output: a lease file with a heartbeat, taken with an atomic create.

Two jobs that would write the same output (a scoring partition, a checkpoint, a round)
must not interleave. The first takes ``<output>/_LEASE``; a second one is refused at once
with :class:`OutputBusy`, which names the holder (host, process, command, since when) and
when its lease runs out. The holder renews the lease every third of ``ttl_s``; a holder
that died (killed, node lost) stops renewing, and the next run takes the lease over once
it has not been renewed for ``ttl_s`` seconds, without anyone deleting anything.

Atomicity comes from the store:
- local disks: every change happens under ``flock`` on ``<output>/_LEASE.lock`` (released
  by the kernel when a process dies), then ``os.replace``;
- S3 and S3-compatible stores: conditional writes, ``If-None-Match: *`` to create and
  ``If-Match: <etag>`` to renew, take over or release (S3 since 2024, MinIO, moto).
Other stores fall back to plain writes, which keep the refusal but not the race-freedom.

``FIQA_LEASE_S`` sets ``ttl_s`` (default 60 s): the longest a dead holder blocks a rerun.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from . import storage
from .errors import FiqaError, OutputBusy

log = logging.getLogger("fiqa.lease")
LEASE = "_LEASE"
DEFAULT_TTL_S = 60.0


class LeaseLost(FiqaError):
    """This run's lease was taken over (it stopped renewing for too long): it must not commit."""


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
    return time.time()


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


class _Store:
    """Create / compare-and-swap / delete one small file; a token identifies a version."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.path = fsspec.core.url_to_fs(uri)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.s3 = hasattr(self.fs, "call_s3")
        parent = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)

    @staticmethod
    def token(data: bytes) -> str:
        return '"' + hashlib.md5(data).hexdigest() + '"'  # an S3 single-part PUT's ETag

    @contextlib.contextmanager
    def _locked(self):
        if not self.local:
            yield
            return
        import fcntl

        with open(self.path + ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, self.token(data)

    def _s3(self, method: str, **kwargs):
        bucket, key, _ = self.fs.split_path(self.path)
        return self.fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)

    @staticmethod
    def _lost_race(e: Exception) -> bool:
        """A failed condition (s3fs turns 412 into FileExistsError) or a vanished object."""
        if isinstance(e, (FileExistsError, FileNotFoundError)):
            return True
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")

    def _s3_if(self, method: str, **kwargs) -> bool:
        """A conditional S3 request; False when its condition failed."""
        try:
            self._s3(method, **kwargs)
        except Exception as e:
            if self._lost_race(e):
                return False
            raise
        return True

    def _local_if(self, expected: str | None, change) -> bool:
        """``change()`` under the lock if the current version is ``expected`` (None: absent)."""
        with self._locked():
            current = self.read()
            if (current[1] if current is not None else None) != expected:
                return False
            change()
            return True

    def create(self, data: bytes) -> bool:
        """Write only if absent; False if it exists."""
        if self.s3:
            return self._s3_if("put_object", Body=data, IfNoneMatch="*")
        return self._local_if(None, lambda: self._write(data))

    def swap(self, expected: str, data: bytes) -> bool:
        """Replace only if the current version is ``expected``; False otherwise."""
        if self.s3:
            return self._s3_if("put_object", Body=data, IfMatch=expected)
        return self._local_if(expected, lambda: self._write(data))

    def delete(self, expected: str) -> bool:
        """Delete only if the current version is ``expected``; False otherwise."""
        if self.s3:
            return self._s3_if("delete_object", IfMatch=expected)
        return self._local_if(expected, lambda: self.fs.rm(self.path))

    def _write(self, data: bytes) -> None:
        if self.local:
            tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        else:
            self.fs.pipe_file(self.path, data)


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
        self._store: _Store | None = None
        self._token: str | None = None
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

    def acquire(self) -> Lease:
        self._store = store = _Store(self.uri)
        body = self._body()
        if store.create(body):
            self._token = store.token(body)
        else:
            current = store.read()
            if current is None:  # released between our create and read: try once more
                if not store.create(body):
                    raise OutputBusy(f"{self.output}: another run took its lease just now")
                self._token = store.token(body)
            else:
                data, token = current
                info = _parse(data)
                age = _now() - float(info.get("renewed", 0))
                if age <= float(info.get("ttl_s", self.ttl_s)):
                    raise OutputBusy(_busy_message(self.output, self.uri, info, age))
                if not store.swap(token, body):
                    raise OutputBusy(f"{self.output}: another run took over its expired lease "
                                     "just now")
                self._token = store.token(body)
                log.warning("%s: took over the lease of %s (%s), not renewed for %.0f s",
                            self.output, info.get("holder"), info.get("command"), age)
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
        body = self._body()
        if self._store.swap(self._token, body):
            self._token = self._store.token(body)
        elif not self.lost:
            self.lost = True
            log.error("%s: this run's lease was taken over by another run", self.output)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another run took the lease (call before committing)."""
        if self.lost:
            raise LeaseLost(
                f"{self.output}: this run stopped renewing its lease for over {self.ttl_s:.0f} s "
                "and another run took it over; this run's results are not committed"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._store is not None and self._token is not None and not self.lost:
            with contextlib.suppress(Exception):
                self._store.delete(self._token)
        self._token = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
