"""Retention: a nightly output keeps its newest ``keep_nights`` complete nights.

After a night commits, each committed ``date=`` partition outside the newest
``keep_nights`` committed ones (by date; the night just written is always kept, even a
backfill of an older date) is removed, under that partition's lease, so no run is
writing it meanwhile. First a ``_RETIRED`` marker is written and ``_SUCCESS`` removed:
from then on the partition reads as incomplete and no night reuses it; then its files;
the marker last. A removal cut short leaves the marker, and the next night's retention
finishes it. Partitions without ``_SUCCESS`` (an unfinished run's) are never touched, nor
are damaged ones (files that do not match their ``_SUCCESS``: ``fiqa verify``): they are
left for a person to look at, and they do not count among the nights kept, so the newest
complete night that matches its ``_SUCCESS`` is never removed.
"""

from __future__ import annotations

import logging

import fsspec
from fsspec.implementations.local import LocalFileSystem

from fiqa_core import storage
from fiqa_core.errors import ConfigError
from fiqa_core.lease import LEASE, Lease

from .commit import MARKER, RETIRED, dates, describe, verify

log = logging.getLogger("fiqa.score")


def check_not_retired(partition: str) -> None:
    """Refuse to write a partition that retention is removing."""
    if storage.exists(storage.join(partition, RETIRED)):
        raise ConfigError(
            f"{partition} is being removed by retention (keep_nights; its {RETIRED} marker "
            "is there): the next night finishes removing it. To score that date again, "
            "remove the folder first"
        )


def to_retire(output: str, current: str, keep: int) -> list[str]:
    """The partitions of ``output`` that retention removes after ``current`` committed:
    the committed ones outside the newest ``keep`` (by date, ``current`` among them), never
    ``current`` itself, and any whose removal was cut short. A committed partition whose
    files do not match its ``_SUCCESS`` is neither counted nor removed (a warning)."""
    this = current.rstrip("/").rsplit("/", 1)[-1]
    complete, retiring = [], []
    for name in dates(output):
        part = storage.join(output, name)
        if storage.exists(storage.join(part, RETIRED)):
            retiring.append(name)
        elif name == this:
            complete.append(name)
        elif storage.exists(storage.join(part, MARKER)):
            problems = verify(part)
            if not problems:
                complete.append(name)
                continue
            log.warning("retention: %s does not match its %s (%s): left as it is, and not "
                        "counted among the nights kept", part, MARKER, describe(problems))
    window = set(complete[-keep:])
    older = [n for n in complete if n not in window and n != this]
    return [storage.join(output, n) for n in sorted(set(retiring) | set(older))]


def retire(output: str, current: str, keep: int | None) -> list[str]:
    """Remove what :func:`to_retire` names; the partitions removed. A partition busy with
    another run, or a store error, is left for the next night (a warning): the night that
    called this is committed already and stays so."""
    if not keep:
        return []
    removed = []
    try:
        parts = to_retire(output, current, keep)
    except Exception as e:  # the store failed listing the nights: all left for the next
        log.warning("retention: nothing removed this time (%s: %s)", type(e).__name__, e)
        return []
    for part in parts:
        try:
            with Lease(part, f"fiqa score retention (keep_nights={keep})"):
                _remove(part)
            _remove_folder(part)
            removed.append(part)
        except Exception as e:  # busy, or the store failed (not always as an OSError)
            log.warning("retention: %s left for the next night (%s: %s)", part,
                        type(e).__name__, e)
    if removed:
        log.warning("retention (keep_nights=%d): removed %d night(s): %s", keep, len(removed),
                    ", ".join(p.rstrip("/").rsplit("/", 1)[-1] for p in removed))
    return removed


def _remove(part: str) -> None:
    marker = storage.join(part, RETIRED)
    storage.write_bytes(marker, b"removed by fiqa score retention (keep_nights)\n")
    if storage.exists(storage.join(part, MARKER)):
        storage.remove(storage.join(part, MARKER))  # no longer complete: nothing reuses it
    fs, root = fsspec.core.url_to_fs(part)
    root = root.rstrip("/")
    for path in sorted(fs.find(root)):
        name = path.rsplit("/", 1)[-1]
        if name != RETIRED and not name.startswith(LEASE):  # the lease: ours until the end
            fs.rm_file(path)
    fs.rm_file(f"{root}/{RETIRED}")


def _remove_folder(part: str) -> None:
    """A local partition's folder, once only the lease's lock file is left (object stores
    have no folders to remove)."""
    fs, root = fsspec.core.url_to_fs(part)
    if isinstance(fs, LocalFileSystem) and all(
            p.rsplit("/", 1)[-1].startswith(LEASE) for p in fs.find(root)):
        fs.rm(root, recursive=True)
