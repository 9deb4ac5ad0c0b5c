"""A scoring run's last two steps, which need no Ray: verify (one row per listed image,
after a repair if needed) and commit (the lease still held, then ``_SUCCESS``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from fiqa_core import storage
from fiqa_core.errors import InputError

from .actor import FAULT_MARKER
from .commit import MARKER, manifest, own_files
from .summary import final_line, summarise

log = logging.getLogger("fiqa.score")


def _whole(summary: dict, images: int) -> bool:
    """Each image's rows once: one row (or with faces=all, one per face) per image."""
    return (summary["paths"] == images and not summary["duplicate_rows"]
            and not summary["incomplete"])


def verify_rows(out: str, images: int, repair: Callable[[], dict]) -> dict:
    """Counts over ``out`` with its manifest, once it holds exactly one row per image (per
    face of it, with ``faces=all``: :mod:`.rows`).

    ``repair`` (run only when the count is off or a row is there twice) keeps one row per
    listed image (face) and returns ``duplicates``, ``unlisted``, an ``example`` of the
    latter and ``listed``, the distinct paths listed. Rows that no repair
    accounts for, and files the run did not write, fail the run with nothing committed.
    """
    files = own_files(out)[0]
    summary = summarise(out, files)
    if not _whole(summary, images):
        # an image's rows twice (a path listed twice, a write redone), or rows of files
        # not listed: one row per listed path kept
        repaired = repair()
        images = repaired["listed"]
        if repaired["duplicates"]:
            log.warning("%s: removed %d duplicate row(s) (one row per image kept)", out,
                        repaired["duplicates"])
        if repaired["unlisted"]:
            raise InputError(
                f"{out} holds {repaired['unlisted']} row(s) of files this run did not list "
                f"(e.g. {repaired['example']}): the partition was started over another input, "
                "or files were deleted since. Nothing was removed. Score into another output "
                "(or run_date), or move this partition aside to rescore it."
            )
        files = own_files(out)[0]
        summary = summarise(out, files)
    if not _whole(summary, images):
        if summary["incomplete"]:  # no whole attempt yet: the next run scores them again
            raise InputError(
                f"{out}: {summary['incomplete']} photo(s) have only some of their faces' rows "
                "(a run stopped between two writes, or its retries disagreed): nothing was "
                "committed; run it again, and those photos are scored again"
            )
        raise InputError(
            f"{out}: {summary['rows']} rows of {summary['paths']} images for {images} listed "
            "images after repair; the partition holds rows this run cannot account for. "
            "Move it aside and run again."
        )
    summary["manifest"] = manifest(files, summary.pop("rows_by_file"))
    for k in ("paths", "incomplete"):  # the images, and none: checked above
        summary.pop(k)
    summary["images"] = images  # distinct paths: a path listed twice is one image
    foreign = sorted(set(files) - {f["name"] for f in summary["manifest"]})
    if foreign:  # the commit must pass its own check (fiqa verify)
        raise InputError(
            f"{out} holds files this run did not write ({', '.join(foreign[:3])}): nothing "
            "was committed. Move them out of the partition and run again"
        )
    return summary


def commit(out: str, summary: dict, lease, output: str) -> dict:
    """Write ``_SUCCESS`` while the lease is still this run's; the summary."""
    summary["images_per_s"] = round(summary["scored"] / max(summary["seconds"], 1e-9), 1)
    lease.check()  # never commit over a run that took the output over
    storage.write_bytes(storage.join(out, MARKER), json.dumps(summary, indent=2).encode())
    try:
        storage.remove(storage.join(output, FAULT_MARKER))
    except OSError as e:  # committed already: a leftover test marker is not a failure
        log.warning("could not remove %s (%s)", FAULT_MARKER, e)
    print(final_line(summary, out, MARKER))
    return summary
