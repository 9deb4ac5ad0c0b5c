"""``fiqa report``: a committed partition at a glance, as ``_report.html`` (one
self-contained page) and ``_report.json`` (the same figures, for monitoring), written
beside its ``_SUCCESS``.

    fiqa report output=s3://scores/faces                   # the latest night
    fiqa report output=s3://scores/faces date=2026-12-01 threshold=2.5
    fiqa report output=s3://pl/set-a                       # a fiqa pseudo-label output

``fiqa score`` writes the report after each night it commits (``report=false`` to skip).
The names begin with ``_`` like ``_SUCCESS``: readers of the partition's Parquet (pandas,
pyarrow, Spark, DuckDB over the folder) skip them, and ``fiqa verify`` does not count them.
The rows are only read; the page's thumbnails are read from the images themselves.
Modules: ``figures`` (the figures, bucket by bucket), ``page`` (the HTML).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass

from fiqa_core import storage
from fiqa_core.config import resolve_config, setting
from fiqa_core.errors import ConfigError, NotFoundError
from jobs.cli import overrides_of, parse_args, run_job, settings_parser

from .figures import ReportSettings, figures

log = logging.getLogger("fiqa.report")
HTML, JSON = "_report.html", "_report.json"


@dataclass(frozen=True)
class ReportConfig:
    output: str = setting(help="a fiqa score or fiqa pseudo-label output (path or URI)")
    date: str | None = setting(None, "the night (YYYY-MM-DD); unset: the latest committed "
                               "night (or the pseudo-label output itself)")
    threshold: float | None = setting(None, "quality threshold: the share of scores below it, "
                                      "in both nights, is reported")
    tolerance: float = setting(1e-4, "a score that moved more while its file and pipeline "
                               "stayed the same is counted as unexpected")
    gallery: int = setting(12, "worst and best faces shown on the page")


def partition_of(output: str, date: str | None) -> str:
    """The committed partition a report is of: ``date=`` under ``output``, the latest
    committed night, or ``output`` itself when it is a pseudo-label output."""
    from jobs.score.commit import MARKER, committed

    if date:
        part = storage.join(output, f"date={date}")
        if not storage.exists(storage.join(part, MARKER)):
            raise NotFoundError(f"{part}: not a committed night (no {MARKER})")
        return part
    parts = committed(output)
    if not parts:
        raise NotFoundError(f"{output}: no committed partition (no {MARKER}) to report on")
    return parts[-1]


def write_report(partition: str, output: str, settings: ReportSettings | None = None,
                 title: str | None = None) -> dict:
    """Write ``_report.json`` and ``_report.html`` into ``partition`` (committed, of
    ``output``), compared with the complete night before it; returns the JSON's figures."""
    from jobs.score.commit import previous_partition

    from .page import render

    nightly = partition.rstrip("/") != output.rstrip("/")
    previous = previous_partition(output, partition)[0] if nightly else None
    fig = figures(partition, previous, settings or ReportSettings())
    name = partition.rstrip("/").rsplit("/", 1)[-1]
    storage.write_bytes(storage.join(partition, JSON),
                        json.dumps(_finite(fig.data), indent=2).encode())
    page = render(fig, title or (f"fiqa: {name}" if nightly else f"fiqa: {partition}"))
    storage.write_bytes(storage.join(partition, HTML), page.encode())
    return fig.data


def _finite(value):
    """JSON without NaN (not JSON): null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa report", (__doc__ or "").strip(), ReportConfig)


def run(cfg: ReportConfig) -> dict:
    if cfg.gallery < 0 or cfg.tolerance < 0:
        raise ConfigError("gallery and tolerance must be >= 0")
    part = partition_of(cfg.output, cfg.date)
    data = write_report(part, cfg.output, ReportSettings(
        threshold=cfg.threshold, tolerance=cfg.tolerance, gallery=cfg.gallery))
    c = data["counts"]
    print(f"fiqa report: {part}: {c['images']} images, {c['scored']} scored, {c['reused']} "
          f"reused, {c['failed']} failed; wrote {HTML} and {JSON}", flush=True)
    return data


def main(args: argparse.Namespace) -> int:
    return run_job("fiqa report", lambda: run(
        resolve_config(ReportConfig, args.config, overrides_of(args))))


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
