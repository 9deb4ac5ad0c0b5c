"""The scoring run: plan -> execute -> verify -> commit, under the partition's lease.

Each step is one function: :func:`~jobs.score.steps.plan_run` (engine decisions, listing,
the night before, what to score and reuse), :func:`~jobs.score.steps.execute` (the
pipeline's stages and the write), :func:`~jobs.score.finish.verify_rows` (one row per
image, repaired if needed) and :func:`~jobs.score.finish.commit` (``_SUCCESS``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from fiqa_core import storage
from fiqa_core.config import resolve_config
from fiqa_core.errors import ConfigError, FiqaError, LeaseLost
from jobs.cli import JobFailed, overrides_of, run_job, settings_parser

from .commit import MARKER, dates
from .config import ScoreConfig, check, partition_uri
from .finish import commit, verify_rows
from .planning import repair
from .retention import check_not_retired, retire
from .stages import pipeline_id
from .steps import execute, plan_run

log = logging.getLogger("fiqa.score")


def get_args_parser(prog: str = "fiqa score", description: str = "") -> argparse.ArgumentParser:
    from .config import ABOUT

    return settings_parser(prog, description or ABOUT, ScoreConfig)


def main(args: argparse.Namespace, nightly: bool = True) -> int:
    prog = "fiqa score" if nightly else "fiqa pseudo-label"
    return run_job(
        prog,
        lambda: run(resolve_config(ScoreConfig, args.config, overrides_of(args)), nightly=nightly),
    )


def _already_complete(out: str, cfg: ScoreConfig, model) -> dict | None:
    marker = storage.join(out, MARKER)
    if not storage.exists(marker):
        return None
    summary = json.loads(storage.read_bytes(marker))
    same_model = summary.get("model") == model.id
    same = (summary.get("pipeline") == pipeline_id(cfg, model) if "pipeline" in summary
            else same_model)  # written before pipeline ids: by model, as then
    if same and summary.get("input") == cfg.input:
        print(f"{out} is complete ({summary['rows']} rows, model {model.id}); nothing to do.")
        return summary
    settings = " with other settings (draft, max_pixels or a stage)" if (
        same_model and not same) else ""
    raise ConfigError(
        f"{out} already holds a complete run with model {summary.get('model')}{settings} over "
        f"{summary.get('input')}; write to another output (or run_date)"
    )


def _check_output_kind(output: str, nightly: bool) -> None:
    """One kind of run per output: a nightly output's root holds only ``date=`` partitions,
    a pseudo-label output is one partition. Mixing them would make each kind's partition
    hold the other's files."""
    from .planning import has_rows

    if nightly and (storage.exists(storage.join(output, MARKER)) or has_rows(output)):
        raise ConfigError(
            f"{output} holds a fiqa pseudo-label output (a {MARKER} or bucket= folders at "
            "its root); fiqa score writes date= partitions below its output: use another "
            "output"
        )
    if not nightly and dates(output):
        raise ConfigError(
            f"{output} holds fiqa score's date= partitions; fiqa pseudo-label writes one "
            "partition at its output: use another output"
        )


def run(cfg: ScoreConfig, nightly: bool = True) -> dict:
    """Score every image under ``cfg.input``; returns the ``_SUCCESS`` summary.

    One run at a time writes a partition: a second one is refused with
    :class:`~fiqa_core.errors.OutputBusy` while the first holds the partition's lease.
    """
    from fiqa_core.engines import read_model_config  # metadata only: never loads torch
    from fiqa_core.lease import Lease

    check(cfg)  # settings, engine and its extras: before any work
    model = read_model_config(cfg.model)
    out = partition_uri(cfg, nightly)
    prog = "fiqa score" if nightly else "fiqa pseudo-label"
    try:
        _check_output_kind(cfg.output, nightly)
        check_not_retired(out)
        done = _already_complete(out, cfg, model)
        if done is not None:
            return done
        with Lease(out, f"{prog} input={cfg.input} model={cfg.model}") as lease:
            done = _already_complete(out, cfg, model)  # the run that held it finished
            return done if done is not None else _run(cfg, nightly, model, out, lease)
    except (FiqaError, LeaseLost):
        raise
    except Exception as e:  # the store failed beyond its retries, a worker was lost...
        raise JobFailed(
            f"{prog} failed before committing {out} ({_reason(e)}). Nothing was committed "
            "and nothing committed before was changed; run it again to resume (rows already "
            "written are kept)."
        ) from e


def _reason(e: BaseException) -> str:
    """The line that says what went wrong: the last ``Type: message`` line of the error's
    text (a Ray error holds the remote traceback, then Ray Data's advice)."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) == 1:
        return f"{type(e).__name__}: {lines[0]}"
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Lost)\b[^:]*: ", ln)]
    return (errors or lines or [type(e).__name__])[-1]  # Ray Data adds advice after it


def _run(cfg: ScoreConfig, nightly: bool, model, out: str, lease) -> dict:
    t0 = time.time()
    planned = plan_run(cfg, nightly, model, out, t0)
    t_exec = time.time()
    warned = execute(planned, out)
    planned.seconds["score_and_write"] = time.time() - t_exec
    t_verify = time.time()

    def repair_rows() -> dict:
        lease.check()  # still ours: repair rewrites files
        return repair(planned.listing, out, cfg.buckets)

    summary = verify_rows(out, planned.images, repair_rows)
    planned.seconds["verify"] = time.time() - t_verify
    summary.update({**planned.facts(t0), "images": summary["images"],  # distinct paths
                    "warnings": warned})
    summary = commit(out, summary, lease, cfg.output)
    if cfg.report:  # before retention, which may remove the night it compares with
        _report(cfg, out)
    if nightly:  # committed: what retention does (or fails to do) cannot change that
        retire(cfg.output, out, cfg.keep_nights)
    return summary


def _report(cfg: ScoreConfig, out: str) -> None:
    """The committed night's report; a failure is a warning (the night is committed)."""
    from jobs.report import HTML, ReportSettings, write_report

    try:
        write_report(out, cfg.output, ReportSettings(threshold=cfg.report_threshold))
        print(f"fiqa: report: {storage.join(out, HTML)}", flush=True)
    except Exception as e:
        log.warning("%s is committed, but its report could not be written (%s: %s); write "
                    "it with: fiqa report output=%s", out, type(e).__name__, e, cfg.output)
