"""Listing primitives and the stores' listers (no Ray here): a file's facts, the fan-out
budget, and how each kind of store lists a folder's files into Arrow columns — local
folders with ``os.scandir``, object stores (``s3://``) by key range
(:mod:`fiqa_core.keyranges`), any other fsspec store with ``find``.
:mod:`fiqa_core.lake` plans a listing over them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import fsspec
import pyarrow as pa

from . import keyranges
from .keyranges import KeyRange

FACT_COLUMNS = ("size", "mtime", "etag")
FILES_SCHEMA = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("etag", pa.string())]
)

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


def full_uri(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """The path as the user would write it: with the protocol when ``like`` had one."""
    return fs.unstrip_protocol(path) if "://" in like else path


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
