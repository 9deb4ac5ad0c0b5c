"""Compare-and-swap of one small file, one class per kind of store (for :mod:`.lease`).

A token names a version of the file: the content's MD5, or the object's ETag on S3. Each
change returns the new token, or None (False) when its condition did not hold.

- :class:`LocalStore`: local disks; every change under ``flock`` on ``<file>.lock``
  (released by the kernel when a process dies), then ``os.replace``.
- :class:`S3Store`: S3-compatible stores; ``If-None-Match: *`` to create, ``If-Match:
  <etag>`` to swap and delete (AWS S3 since 2024, MinIO, SeaweedFS). Each bucket is probed
  once per process: a store that ignores the PUT conditions (some gateways accept every
  conditional write) is refused; where DELETE ignores ``If-Match``, a delete compares the
  version first.
- :class:`PlainStore`: any other store, only when ``FIQA_UNSAFE_LEASE=1``: a check, then a
  plain write. A second run is still refused; two started at the same moment may both win.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from . import storage
from .errors import ConfigError

log = logging.getLogger("fiqa.lease")
UNSAFE = "FIQA_UNSAFE_LEASE"
_probed: dict[tuple, str | None] = {}  # (endpoint, bucket) -> why conditions fail, or None
_exact_deletes: dict[tuple, bool] = {}  # (endpoint, bucket) -> DELETE honours If-Match


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Store:
    """Create / compare-and-swap / delete one small file."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes, str] | None:
        """The content and its token, or None when absent."""
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, _md5(data)

    def create(self, data: bytes) -> str | None:
        raise NotImplementedError

    def swap(self, expected: str, data: bytes) -> str | None:
        raise NotImplementedError

    def delete(self, expected: str) -> bool:
        raise NotImplementedError


class LocalStore(Store):
    """A local disk: each change under an exclusive ``flock``, written with ``os.replace``."""

    def _if(self, expected: str | None, data: bytes | None) -> str | None:
        """If the current version is ``expected`` (None: absent), write ``data`` (None:
        delete); the new token ("" once deleted), None otherwise."""
        import fcntl

        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the kernel
            current = self.read()
            if (current[1] if current is not None else None) != expected:
                return None
            if data is None:
                os.unlink(self.path)
                return ""
            tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
            return _md5(data)

    def create(self, data):
        return self._if(None, data)

    def swap(self, expected, data):
        return self._if(expected, data)

    def delete(self, expected):
        return self._if(expected, None) is not None


class S3Store(Store):
    """An S3-compatible store: conditional PUT and DELETE (``If-None-Match``/``If-Match``)."""

    def _call(self, method: str, key: str | None = None, **kwargs):
        bucket, own, _ = self.fs.split_path(self.path)
        return self.fs.call_s3(method, Bucket=bucket, Key=key or own, **kwargs)

    @staticmethod
    def _lost_race(e: BaseException | None) -> bool:
        """A failed condition or a vanished object. s3fs turns a 412 into FileExistsError
        (If-None-Match) or a plain OSError whose cause is the ClientError (If-Match)."""
        for _ in range(5):
            if e is None:
                return False
            if isinstance(e, (FileExistsError, FileNotFoundError)):
                return True
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey",
                        "412", "409"):
                return True
            e = e.__cause__ or e.__context__
        return False

    def _conditional(self, method: str, key: str | None = None, **kwargs):
        """The call's response, or None when its condition failed."""
        try:
            return self._call(method, key, **kwargs)
        except Exception as e:
            if self._lost_race(e):
                return None
            raise

    def read(self):
        for _ in range(5):  # the ETag before and after the read agree: one version
            before = self._conditional("head_object")
            data = super().read()
            after = self._conditional("head_object")
            if before is None or data is None or after is None:
                return None
            if before["ETag"] == after["ETag"]:
                return data[0], after["ETag"]
        raise OSError(f"{self.path}: changed on every read")

    def create(self, data):
        answer = self._conditional("put_object", Body=data, IfNoneMatch="*")
        return answer and answer["ETag"]

    def swap(self, expected, data):
        answer = self._conditional("put_object", Body=data, IfMatch=expected)
        return answer and answer["ETag"]

    exact_deletes = True  # set by the probe: False where DELETE ignores If-Match

    def delete(self, expected):
        if not self.exact_deletes:  # compare first: the window is one round trip
            current = self.read()
            if current is None or current[1] != expected:
                return False
        return self._conditional("delete_object", IfMatch=expected) is not None

    def why_not_conditional(self) -> str | None:
        """Write a probe object beside the lease, once per bucket and process: None when
        the store refuses a second create and a stale swap, else what it did instead."""
        bucket = self.fs.split_path(self.path)[0]
        where = (endpoint(self.fs), bucket)
        if where not in _probed:
            probe = f"{self.fs.split_path(self.path)[1]}.probe-{uuid.uuid4().hex[:8]}"
            try:
                if self._conditional("put_object", probe, Body=b"1", IfNoneMatch="*") is None:
                    raise OSError(f"{bucket}/{probe}: exists although its name is new")
                again = self._conditional("put_object", probe, Body=b"2", IfNoneMatch="*")
                wrong = f'"{"0" * 32}"'
                stale = self._conditional("put_object", probe, Body=b"3", IfMatch=wrong)
                gone = self._conditional("delete_object", probe, IfMatch=wrong)
            except Exception as e:
                code = getattr(e, "response", {}).get("Error", {}).get("Code")
                if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest",
                                "501", "400"):
                    raise
                _probed[where] = f"it refused the conditional headers ({code})"
            else:
                _probed[where] = (
                    "it accepted a create (If-None-Match: *) over an existing object"
                    if again is not None else
                    "it accepted a write with a wrong If-Match" if stale is not None else None)
                _exact_deletes[where] = gone is None
            finally:
                with contextlib.suppress(Exception):
                    self._call("delete_object", probe)
        self.exact_deletes = _exact_deletes.get(where, True)
        return _probed[where]


class PlainStore(Store):
    """Any other store, opted in (``FIQA_UNSAFE_LEASE=1``): a check, then a plain write.
    A second run is refused; two that start at the same moment may both proceed."""

    def create(self, data):
        if storage.exists(self.fs.unstrip_protocol(self.path)):  # errors raise, not "absent"
            return None
        self.fs.pipe_file(self.path, data)
        return _md5(data)

    def swap(self, expected, data):
        current = self.read()
        if current is None or current[1] != expected:
            return None
        self.fs.pipe_file(self.path, data)
        return _md5(data)

    def delete(self, expected):
        current = self.read()
        if current is None or current[1] != expected:
            return False
        self.fs.rm(self.path)
        return True


def endpoint(fs) -> str:
    """The S3 endpoint an s3fs filesystem talks to, as set (else AWS's own)."""
    return (fs.client_kwargs.get("endpoint_url") or getattr(fs, "endpoint_url", None)
            or os.environ.get("AWS_ENDPOINT_URL") or "of AWS")


def store_for(uri: str) -> Store:
    """The store class for ``uri``'s kind; refuses one that cannot be race-free."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        return LocalStore(fs, path)
    unsafe = os.environ.get(UNSAFE) == "1"
    why = f"{fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]}:// has no " \
          "conditional writes fiqa can use (local disks and S3-compatible stores have them)"
    if hasattr(fs, "call_s3"):
        store = S3Store(fs, path)
        reason = store.why_not_conditional()
        if reason is None:
            return store
        why = f"the S3 endpoint {endpoint(fs)} ignores conditional writes: {reason}"
    if unsafe:
        log.warning("%s: %s; taking the lease with plain writes (%s=1)", uri, why, UNSAFE)
        return PlainStore(fs, path)
    raise ConfigError(
        f"{uri}: cannot take a race-free lease: {why}, so two runs could both write this "
        f"output. Write to a local disk or an S3-compatible store with conditional writes, or "
        f"set {UNSAFE}=1 to accept the risk (a second run is still refused, but two started "
        "at the same moment may both proceed)"
    )
