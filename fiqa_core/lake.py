"""Image lakes: listing files with the facts that make reruns incremental (no Ray here).

A file's facts are ``size`` (bytes), ``mtime`` (seconds since the epoch, when the store
reports one) and ``etag`` (object stores' content tag, when reported). An image whose
facts and model are unchanged since the last run need not be scored again.

Listing fans out (the caller runs the parts, in Ray tasks): the driver lists the input's
folders breadth-first, level by level, until there are ``Budget.tasks`` folders to list
(:func:`plan_listing`; files met on the way are its rows), so a lake of one or two top-level
prefixes is still listed by many tasks. On an object store (``s3://``) a folder is a key
range (:mod:`fiqa_core.keyranges`) that splits itself when it holds more than
``Budget.pages`` pages of keys, so one flat prefix of millions of keys is listed in parallel
too. A local folder's own files are listed by one task (millions of files directly in one
folder: one task, ~5 s a million on the 2-core machine); other stores (``gs://``,
``memory://``...) list a folder recursively per task, with fsspec's ``find``. Every file
exactly once, a glob's pattern applied to each.

Rows come as Arrow tables (:data:`FILES_SCHEMA`), built column by column: no per-row dicts.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import os
import posixpath
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import keyranges, storage
from .errors import NotFoundError
from .images import Decoded
from .keyranges import KeyRange

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
FACT_COLUMNS = ("size", "mtime", "etag")
FILES_SCHEMA = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("etag", pa.string())]
)
# is_image_path as a regular expression: a basename with something but dots before the suffix
_IMAGE_RE = r"(?:^|/)[^/]*[^/.][^/]*\.(?:{})$".format("|".join(
    "".join(f"[{c}{c.upper()}]" for c in ext[1:]) for ext in sorted(IMAGE_EXTENSIONS)
))


@dataclass(frozen=True)
class Budget:
    """How a listing fans out.

    Attributes:
        tasks: The parts (folders, key ranges) to aim for.
        group: The parts a listing task takes at least (object stores: listed at once, in
            threads, as they wait on the network).
        pages: The pages a task lists of a key range before splitting the rest (None: never).
        level_pages: The pages of a folder's own entries the driver lists before leaving the
            folder whole to a task (the pages it listed are wasted then: keep it small).
        page_keys: Keys (entries) a page.
    """

    tasks: int = 1
    group: int = 4
    pages: int | None = 10
    level_pages: int = 1
    page_keys: int = keyranges.PAGE_KEYS

    @property
    def pieces(self) -> int:
        """The ranges a key range left unfinished is split into."""
        return min(self.tasks, 64) if self.pages is not None else 1


def is_image_path(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def bucket_of(path: str, buckets: int) -> int:
    """Stable bucket of a path (same in every process and run, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big") % buckets


def buckets_of(paths: Sequence[str], buckets: int) -> np.ndarray:
    """:func:`bucket_of` of each path (int64), twice as fast as calling it for each."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(p.encode(), digest_size=8).digest() for p in paths])
    return (np.frombuffer(digests, dtype=">u8") % np.uint64(buckets)).astype(np.int64)


def image_mask(paths: pa.Array) -> pa.Array:
    """:func:`is_image_path` of each path, vectorised."""
    return pc.match_substring_regex(paths, _IMAGE_RE)


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


def _etag(info: dict) -> str | None:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    return str(etag).strip('"') if etag is not None else None


def facts(info: dict) -> dict:
    """``size``/``mtime``/``etag`` from an fsspec ``info`` dict of any backend."""
    return {"size": int(info.get("size") or 0), "mtime": _mtime(info), "etag": _etag(info)}


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


def plan_listing(uri: str, budget: Budget) -> tuple[pa.Table, list]:
    """The driver's share of listing ``uri``: its folders, breadth-first, level by level,
    until there are ``budget.tasks`` to list or no level holds more folders.

    Returns the files met on the way (a table of :data:`FILES_SCHEMA`) and the parts left for
    listing tasks (:func:`list_parts`): the last level's folders, and the folders whose own
    level was too large to list on the driver (over ``budget.level_pages`` pages).
    """
    fs, root, pattern = split_root(uri)
    if not fs.exists(root):
        raise NotFoundError(f"{uri}: no such folder or prefix")
    store, files = _store(fs), _Files()
    if fs.isfile(root):
        files.add_info(fs.info(root))
        return files.table(fs, uri, pattern), []
    level, parts = [store.folder(root)], []
    while level and len(level) + len(parts) < budget.tasks:
        with ThreadPoolExecutor(max_workers=min(16, len(level))) as pool:
            found = list(pool.map(lambda folder: store.level(folder, budget), level))
        deeper = []
        for folder, listed in zip(level, found, strict=True):
            if listed is None:
                parts.append(folder)
            else:
                files.extend(listed[0])
                deeper += listed[1]
        level = deeper
    return files.table(fs, uri, pattern), parts + level


def list_parts(uri: str, parts: Sequence, budget: Budget) -> tuple[pa.Table, list]:
    """Every file in ``parts`` of ``uri`` (from :func:`plan_listing`, or left by an earlier
    call), and the parts left: an object-store key range of more than ``budget.pages`` pages
    leaves the rest of its keys, split into ``budget.pieces`` ranges. Object-store parts are
    listed at once, in threads (they wait on the network)."""
    fs, _, pattern = split_root(uri)
    store = _store(fs)
    threads = min(len(parts), budget.group) if isinstance(store, _S3) else 1
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        listed = list(pool.map(lambda part: store.list(part, budget), parts))
    files, rest = _Files(), []
    for found, left in listed:
        files.extend(found)
        rest += left
    return files.table(fs, uri, pattern), rest


def task_groups(parts: Sequence, budget: Budget) -> list[list]:
    """``parts`` in groups of ``budget.group`` or more, a listing task each, at most
    ``2 * budget.tasks`` groups: a level of thousands of small folders is not thousands of
    tasks."""
    size = max(budget.group, -(-len(parts) // (2 * budget.tasks)))
    return [list(parts[i:i + size]) for i in range(0, len(parts), size)]


class _Files:
    """Listed files, column by column, under their filesystem's names."""

    def __init__(self):
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.mtimes: list[float | None] = []
        self.etags: list[str | None] = []

    def add(self, name: str, size: int, mtime: float | None, etag: str | None) -> None:
        self.names.append(name)
        self.sizes.append(size)
        self.mtimes.append(mtime)
        self.etags.append(etag)

    def add_info(self, info: dict, name: str | None = None) -> None:
        f = facts(info)
        self.add(name or info["name"], f["size"], f["mtime"], f["etag"])

    def add_contents(self, bucket: str, contents: Sequence[dict]) -> None:
        """ListObjectsV2 ``Contents`` entries, with the facts s3fs's ``info`` gives."""
        self.names += [f"{bucket}/{c['Key']}" for c in contents]
        self.sizes += [int(c.get("Size") or 0) for c in contents]
        self.mtimes += [_mtime(c) for c in contents]
        self.etags += [_etag(c) for c in contents]

    def extend(self, other: _Files) -> None:
        self.names += other.names
        self.sizes += other.sizes
        self.mtimes += other.mtimes
        self.etags += other.etags

    def table(self, fs, like: str, pattern: str | None) -> pa.Table:
        """The files matching ``pattern`` (None: all), with paths as in ``like``."""
        cols = [self.names, self.sizes, self.mtimes, self.etags]
        if pattern is not None:
            keep = _matcher(pattern)
            rows = [i for i, name in enumerate(self.names) if keep(name)]
            cols = [[col[i] for i in rows] for col in cols]
        cols[0] = _full_uris(fs, cols[0], like)
        return pa.table([pa.array(c, f.type) for c, f in zip(cols, FILES_SCHEMA, strict=True)],
                        schema=FILES_SCHEMA)


def _full_uris(fs, names: list[str], like: str) -> list[str]:
    """:func:`full_uri` of each name (the protocol's prefix found once)."""
    if "://" not in like or not names:
        return names
    first = fs.unstrip_protocol(names[0])
    if not first.endswith(names[0]):
        return [fs.unstrip_protocol(n) for n in names]
    scheme = first[: len(first) - len(names[0])]
    return [scheme + n for n in names]


def _matcher(pattern: str) -> Callable[[str], bool]:
    """Glob match where ``**/`` also matches no folder at all, as in fsspec and pathlib."""
    exact = re.compile(fnmatch.translate(pattern)).match
    shallow = re.compile(fnmatch.translate(pattern.replace("/**/", "/"))).match
    return lambda name: exact(name) is not None or shallow(name) is not None


class _Generic:
    """Any fsspec filesystem: a level with ``ls``, a folder recursively with ``find``."""

    def __init__(self, fs):
        self.fs = fs

    def folder(self, path: str):
        return path

    def level(self, path: str, budget: Budget) -> tuple[_Files, list]:
        files, dirs = _Files(), []
        for info in self.fs.ls(path, detail=True):
            if info.get("type") == "directory":
                dirs.append(info["name"])
            else:
                files.add_info(info)
        return files, dirs

    def list(self, path: str, budget: Budget) -> tuple[_Files, list]:
        files = _Files()
        for name, info in self.fs.find(path, detail=True).items():
            files.add_info(info, name)
        return files, []


class _Local(_Generic):
    """Local folders through ``os.scandir``: what fsspec's ``ls``/``find`` report (a link or
    anything else that is not a folder is a file, of its target's size), at a fraction of
    the cost."""

    def level(self, path: str, budget: Budget) -> tuple[_Files, list] | None:
        """The level's files and subfolders, or None past ``budget.level_pages`` pages."""
        files, dirs = _Files(), []
        limit = budget.level_pages * budget.page_keys
        if not _scan(path, files, dirs, limit):
            return None
        return files, dirs

    def list(self, path: str, budget: Budget) -> tuple[_Files, list]:
        files, folders = _Files(), [path]
        while folders:
            _scan(folders.pop(), files, folders)
        return files, []


def _scan(folder: str, files: _Files, dirs: list[str], limit: int | None = None) -> bool:
    """One local folder's files, and its subfolders onto ``dirs``; False (and nothing) when it
    holds more than ``limit`` entries. A folder that cannot be read has none (as in fsspec's
    walk)."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return True
    if limit is not None and len(entries) > limit:
        return False
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                dirs.append(e.path)
                continue
            st = e.stat(follow_symlinks=False)
            size = _target_size(e) if e.is_symlink() else st.st_size
        except FileNotFoundError:  # removed meanwhile
            continue
        files.add(e.path, size, st.st_mtime, None)
    return True


def _target_size(link: os.DirEntry) -> int:
    try:
        return link.stat(follow_symlinks=True).st_size
    except OSError:
        return 0


class _S3:
    """S3 and S3-compatible stores (s3fs): a level with ListObjectsV2 and ``Delimiter``, a
    folder as a key range of all the keys below it."""

    def __init__(self, fs):
        self.fs = fs

    def folder(self, path: str) -> KeyRange:
        bucket, key, _ = self.fs.split_path(path)
        return KeyRange(bucket, f"{key}/" if key else "")

    def level(self, r: KeyRange, budget: Budget) -> tuple[_Files, list] | None:
        """The level's files and sub-prefixes, or None past ``budget.level_pages`` pages."""
        files, dirs = _Files(), {}
        kwargs = {"Bucket": r.bucket, "Prefix": r.prefix, "Delimiter": "/",
                  "MaxKeys": budget.page_keys}
        for _ in range(budget.level_pages):
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            files.add_contents(r.bucket, page.get("Contents") or ())
            for p in page.get("CommonPrefixes") or ():
                dirs.setdefault(p["Prefix"], KeyRange(r.bucket, p["Prefix"]))
            if not page.get("IsTruncated"):
                return files, list(dirs.values())
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return None

    def list(self, r: KeyRange, budget: Budget) -> tuple[_Files, list]:
        got, rest = keyranges.list_range(self.fs, r, budget.pages, budget.page_keys)
        files = _Files()
        files.add_contents(r.bucket, got)
        if rest is None:
            return files, []
        return files, keyranges.split(rest, [c["Key"] for c in got], budget.pieces)


def _store(fs) -> _Generic | _S3:
    if hasattr(fs, "call_s3"):
        return _S3(fs)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return _Local(fs)
    return _Generic(fs)


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
