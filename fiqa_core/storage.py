"""Paths that may be local or any fsspec URI (s3://, gs://, memory://, file://)."""

from __future__ import annotations

import fsspec
from fsspec.implementations.local import LocalFileSystem


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically where the filesystem allows (local: temp file + rename)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)  # object stores: a single PUT is already atomic


def remove(uri: str) -> None:
    """Delete a file or a whole folder if it exists (nothing to delete is not an error)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs.isdir(path)


def read_bytes_retrying(
    uri: str, attempts: int = 3, backoff_s: float = 0.5
) -> tuple[bytes | None, str, str | None]:
    """Read a whole object, retrying transient errors; never raises.

    Returns:
        ``(data, "ok", None)``, or ``(None, status, reason)`` with status ``missing`` (no such
        object: not retried) or ``read_error`` (still failing after ``attempts`` tries).
    """
    import time

    error = None
    for attempt in range(attempts):
        try:
            return read_bytes(uri), "ok", None
        except FileNotFoundError:
            return None, "missing", "no such file or object"
        except IsADirectoryError:
            return None, "missing", "is a directory, not a file"
        except Exception as e:  # network, throttling, permissions: worth another try
            error = f"{type(e).__name__}: {e}"
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    return None, "read_error", f"after {attempts} attempts: {error}"
