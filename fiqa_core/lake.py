"""Image lakes: listing files with the facts that make reruns incremental (no Ray here).

A file's facts are ``size`` (bytes), ``mtime`` (seconds since the epoch, when the store
reports one) and ``etag`` (object stores' content tag, when reported). An image whose
facts and model are unchanged since the last run need not be scored again.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import posixpath
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import fsspec

from . import storage
from .errors import NotFoundError
from .images import Decoded

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
FACT_COLUMNS = ("size", "mtime", "etag")


def is_image_path(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def bucket_of(path: str, buckets: int) -> int:
    """Stable bucket of a path (same in every process and run, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big") % buckets


def _mtime(info: dict) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dt.datetime):
            return v.timestamp()
        if isinstance(v, str):
            try:
                return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def facts(info: dict) -> dict:
    """``size``/``mtime``/``etag`` from an fsspec ``info`` dict of any backend."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    return {
        "size": int(info.get("size") or 0),
        "mtime": _mtime(info),
        "etag": str(etag).strip('"') if etag is not None else None,
    }


def split_root(uri: str) -> tuple[fsspec.AbstractFileSystem, str, str | None]:
    """(filesystem, root path, glob pattern or None) for a prefix or a glob."""
    fs, path = fsspec.core.url_to_fs(uri)
    if any(ch in path for ch in "*?["):
        root = path
        for i, ch in enumerate(path):
            if ch in "*?[":
                root = path[:i].rsplit("/", 1)[0]
                break
        return fs, root, path
    return fs, path.rstrip("/"), None


def full_uri(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """The path as the user would write it: with the protocol when ``like`` had one."""
    return fs.unstrip_protocol(path) if "://" in like else path


def list_top(uri: str) -> tuple[list[dict], list[str]]:
    """One level under the root: (file rows, subdirectory paths) — the listing's partitions."""
    fs, root, pattern = split_root(uri)
    if not fs.exists(root):
        raise NotFoundError(f"{uri}: no such folder or prefix")
    if fs.isfile(root):
        return [_row(fs, fs.info(root), uri)], []
    files, dirs = [], []
    for info in fs.ls(root, detail=True):
        name = info["name"]
        if info.get("type") == "directory":
            dirs.append(name)
        elif _matches(name, pattern):
            files.append(_row(fs, info, uri))
    return files, dirs


def list_under(uri_like: str, directory: str) -> Iterator[dict]:
    """Every file below ``directory`` (recursive), as rows with path and facts."""
    fs, _, pattern = split_root(uri_like)
    for name, info in sorted(fs.find(directory, detail=True).items()):
        if _matches(name, pattern):
            yield _row(fs, info, uri_like)


def _matches(name: str, pattern: str | None) -> bool:
    """Glob match where ``**/`` also matches no folder at all, as in fsspec and pathlib."""
    if pattern is None:
        return True
    return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, pattern.replace("/**/", "/"))


def _row(fs, info: dict, like: str) -> dict:
    return {"path": full_uri(fs, info["name"], like), **facts(info)}


def load_images(
    paths: Sequence[str],
    decode: Callable[[bytes], Decoded],
    threads: int = 16,
    decode_slots: int | None = None,
) -> list[Decoded]:
    """Read and decode each path; one result per path, in order.

    Reads run in a thread pool, so object-store latency overlaps. PIL releases the GIL while
    decoding, so decodes would run on as many cores as there are threads: ``decode_slots``
    bounds how many run at once (the CPUs the caller reserved), reads stay concurrent.
    Transient object-store errors are retried by the store's client
    (:mod:`fiqa_core.storage`); objects still unreadable become ``missing`` / ``read_error``
    results. Never raises.
    """
    slots = threading.BoundedSemaphore(decode_slots) if decode_slots else nullcontext()

    def one(path: str) -> Decoded:
        data, status, error = storage.read_object(path)
        if data is None:
            return Decoded(status, error)
        with slots:
            return decode(data)

    if threads <= 1 or len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        return list(pool.map(one, paths))
