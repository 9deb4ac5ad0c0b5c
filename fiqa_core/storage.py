"""Paths that may be local or any fsspec URI (s3://, gs://, memory://, file://).

Object-store retries happen in one place: botocore's retry mode (``standard``: throttling,
5xx and connection errors retried with exponential backoff and full jitter, 8 tries), set
once for every s3fs filesystem this process opens (:func:`configure_object_stores`, run on
import). s3fs's own retry loop is turned off, so attempts do not multiply, and listings
are not cached, so a file another run wrote (a ``_SUCCESS``, a lease) is seen at once.
``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS`` override the mode and the tries. ``adaptive``
adds a client-wide rate limiter: after one SlowDown every request of the process waits
(the fault tests' planning case took 102 s with it, 48 s with ``standard``).
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

S3_RETRY_MODE = "standard"
S3_MAX_ATTEMPTS = 8  # tries in all (as AWS_MAX_ATTEMPTS counts): up to ~20 s apart at the end
PARQUET_MAGIC = b"PAR1"


def configure_object_stores() -> None:
    """botocore's retries for every s3fs filesystem opened from now on; call again after
    changing ``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS`` (and clear s3fs's instance cache)."""
    conf = fsspec.config.conf.setdefault("s3", {})
    conf.setdefault("config_kwargs", {})["retries"] = {
        "mode": os.environ.get("AWS_RETRY_MODE") or S3_RETRY_MODE,
        "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS),
    }
    conf["use_listings_cache"] = False
    try:
        import s3fs
    except ImportError:  # no S3 support installed: nothing to configure
        return
    s3fs.S3FileSystem.retries = 1  # its own loop (a class default): one pass, botocore's inside


configure_object_stores()


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


BODY_TRIES = 3  # a response cut off mid-body: botocore retries only until the headers


def read_bytes(uri: str) -> bytes:
    """A whole object. The store's client retries failed requests; a response that breaks
    off after its headers (which botocore cannot retry) is read again, up to 3 times.
    A local file is read with a plain ``open``: fsspec's file object cost more than the
    read itself for small images (a third of a decode task's time, profiled)."""
    local = local_path(str(uri))
    if local is not None:
        with open(local, "rb") as f:
            return f.read()
    fs, path = fsspec.core.url_to_fs(str(uri))
    for attempt in range(BODY_TRIES):
        try:
            return fs.cat_file(path)
        except Exception as e:
            if attempt + 1 == BODY_TRIES or not _cut_off(e):
                raise
    raise AssertionError("unreachable")


def local_path(uri: str) -> str | None:
    """The local path of a plain path or a ``file://`` URI; None for any other store (whose
    reads wait on the network, so they are worth running in threads)."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def _cut_off(e: BaseException) -> bool:
    """Whether an error is a response body that broke off (not a refused request)."""
    names = {"ClientPayloadError", "IncompleteRead", "IncompleteReadError",
             "ResponseStreamingError", "ContentLengthError"}
    while e is not None:
        if type(e).__name__ in names:
            return True
        e = e.__cause__ or e.__context__
    return False


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically where the filesystem allows (local: temp file + rename)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        fs.pipe_file(tmp, data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)  # object stores: a single PUT is already atomic


def remove(uri: str) -> None:
    """Delete a file or a whole folder if it exists (nothing to delete is not an error)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    if exists(uri):
        fs.rm(path, recursive=True)


def exists(uri: str) -> bool:
    """Whether ``uri`` exists. Only "not found" is False: any other error (throttling, a
    timeout, a refused connection) raises, so a store that fails never makes a committed
    file look absent."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    try:
        if isinstance(fs, LocalFileSystem):
            os.stat(path)  # os.path.exists answers False on EACCES, EIO, ESTALE too
        else:
            fs.info(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def isdir(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs.isdir(path)


def read_object(uri: str) -> tuple[bytes | None, str, str | None]:
    """Read a whole object (the store's client retries transient errors); never raises.

    Returns:
        ``(data, "ok", None)``, or ``(None, status, reason)`` with status ``missing`` (no such
        object) or ``read_error`` (still failing after the client's retries).
    """
    try:
        return read_bytes(uri), "ok", None
    except FileNotFoundError:
        return None, "missing", "no such file or object"
    except IsADirectoryError:
        return None, "missing", "is a directory, not a file"
    except Exception as e:  # network, throttling, permissions, after botocore's retries
        return None, "read_error", f"{type(e).__name__}: {e}"


# -- Parquet files that are published whole or not at all ---------------------------------


def parquet_tail_ok(size: int, head: bytes, tail: bytes) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` and ending with ``tail`` (its
    last 8 bytes) is a whole Parquet file: magic at both ends, a footer that fits."""
    if size < 12 or head[:4] != PARQUET_MAGIC or tail[-4:] != PARQUET_MAGIC:
        return False
    footer = int.from_bytes(tail[-8:-4], "little")
    return 0 < footer <= size - 12


class ParquetOutput(io.RawIOBase):
    """A Parquet file being written: published under its name on close only if whole.

    Local disks: written to a hidden temporary name beside it, then ``os.replace``d into
    place. Object stores: the store's own upload (published on completion), discarded
    instead of completed when the file is not whole. Either way no reader ever sees a
    Parquet file cut short by a failed or killed writer.
    """

    def __init__(self, fs, path: str):
        super().__init__()
        self.fs, self.path, self.size = fs, path, 0
        self.head, self.tail, self.failed = b"", b"", False
        self.local = isinstance(fs, LocalFileSystem)
        if self.local:
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            self.tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            self.f = open(self.tmp, "wb")
        else:
            self.f = fs.open(path, "wb")

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        try:
            self.f.write(data)
        except BaseException:
            self.failed = True  # whatever follows, this file is not published
            raise
        if len(self.head) < 4:
            self.head = (self.head + data)[:4]
        self.tail = (self.tail + data)[-8:]
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if self.closed:
            return
        whole = not self.failed and parquet_tail_ok(self.size, self.head, self.tail)
        try:
            if self.local:
                try:
                    self.f.close()
                    if whole:
                        os.replace(self.tmp, self.path)
                finally:
                    if os.path.exists(self.tmp):  # not published: never left behind
                        os.unlink(self.tmp)
            elif whole:
                self.f.close()
            else:
                if hasattr(self.f, "discard"):  # buffered uploads (s3fs, gcsfs): aborted
                    self.f.discard()
                    with contextlib.suppress(AttributeError):  # not written at exit again
                        self.f.closed = True
                else:
                    self.f.close()
                if self.fs.exists(self.path):  # a store that published it anyway
                    self.fs.rm(self.path)
        finally:
            super().close()
        if not whole:
            raise OSError(f"{self.path}: not a whole Parquet file ({self.size} bytes written"
                          f"{', a write failed' if self.failed else ''}); not published")


def is_temporary(path: str) -> bool:
    """Whether ``path`` is a :class:`ParquetOutput` temporary (an unpublished write)."""
    name = path.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp") and ".parquet." in name


def arrow_filesystem(uri: str):
    """``(pyarrow filesystem, path)`` for Ray Data's writers: every file goes through this
    module's fsspec filesystem (so object stores get the retries configured above) and
    every ``.parquet`` file is published whole or not at all (:class:`ParquetOutput`)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    class Handler(pafs.FSSpecHandler):
        def open_output_stream(self, path, metadata):
            if not path.endswith(".parquet"):
                return super().open_output_stream(path, metadata)
            return pa.PythonFile(ParquetOutput(self.fs, path), mode="w")

    fs, path = fsspec.core.url_to_fs(str(uri))
    return pafs.PyFileSystem(Handler(fs)), path
