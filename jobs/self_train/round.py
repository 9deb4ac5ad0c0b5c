"""``fiqa self-train``: one self-training round, stage by stage, each stage recorded.

    fiqa self-train --config round.yaml [teacher.epochs=3 ...] [--from-stage S] [--until-stage S]

holdout -> teacher0 (labels) -> pseudo_a (T0 scores set A) -> teacher1 (labels + A)
-> pseudo_b (T1 scores set B) -> student (labels + A + B) -> evaluate (all three on the
held-out labels) -> report. Each stage runs the same code as the single jobs
(``fiqa train``, ``fiqa pseudo-label``, ``fiqa evaluate``).

Every stage writes ``<output>/stages/<stage>.json``: a key (hash of the settings that
determine its result plus the keys of the stages it reads), settings, inputs, outputs,
counts and times (and, for a failed stage, the error with its whole cause). A rerun skips
stages whose key is unchanged and whose outputs exist; a changed key removes the stage's
old outputs and reruns it, and so everything after it (their keys include its key); a stage
recorded as running or failed resumes.

The run itself: stage by stage in order, skipping what is done, recording everything.
"""

from __future__ import annotations

import argparse
import json
import time

from fiqa_core import storage
from fiqa_core.config import resolve_config, save_config
from fiqa_core.errors import ConfigError, FiqaError
from fiqa_core.extras import named, require
from fiqa_core.lease import Lease
from jobs.cli import JobFailed, format_cause, overrides_of, run_job, settings_parser

from .config import RoundConfig, absolute_paths
from .records import can_resume, is_done, now, read_record, remove_outputs, write_record
from .stages import STAGE_DEFS, STAGES, Stage, plan_stages


class StageFailed(JobFailed):
    """A stage stopped with an error; rerunning the same command resumes it."""


def get_args_parser() -> argparse.ArgumentParser:
    lines = [f"  {i + 1}. {d.name}: {d.description}" for i, d in enumerate(STAGE_DEFS)]
    about = (__doc__ or "").split("\n\nThe run itself:")[0].strip()
    parser = settings_parser(
        "fiqa self-train", about + "\n\nStages:\n" + "\n".join(lines), RoundConfig,
        epilog="Role settings take a dot: teacher.epochs=3.",
    )
    parser.add_argument("--from-stage", choices=STAGES, help="rerun from this stage on")
    parser.add_argument("--until-stage", choices=STAGES, help="stop after this stage")
    return parser


def main(args: argparse.Namespace) -> int:
    return run_job("fiqa self-train", lambda: run(
        resolve_config(RoundConfig, args.config, overrides_of(args)),
        from_stage=args.from_stage, until_stage=args.until_stage,
    ))


def _check_from_stage(cfg, stages, from_stage, until_stage) -> int | None:
    if from_stage is None:
        return None
    first = STAGES.index(from_stage)
    if until_stage and first > STAGES.index(until_stage):
        raise ConfigError(f"--from-stage {from_stage} comes after --until-stage {until_stage}")
    for name in STAGES[:first]:
        if not is_done(cfg, stages[name]):
            raise ConfigError(
                f"--from-stage {from_stage}: the earlier stage {name} is not done with "
                "these settings; run without --from-stage first"
            )
    return first


def run(cfg: RoundConfig, from_stage: str | None = None, until_stage: str | None = None) -> dict:
    """Run the round's stages in order; returns ``{stage: "skipped" | "ran" | "resumed"}``."""
    cfg = absolute_paths(cfg)
    stages = plan_stages(cfg)  # bad settings are exit 2 whether or not the round is busy
    # one run per round: a second one is refused while this one lives (its stages take
    # their own outputs' leases too, so a single job started on one of them is refused)
    with Lease(cfg.output, f"fiqa self-train output={cfg.output}") as lease:
        outcome = _run(cfg, stages, from_stage, until_stage)
        lease.check()
        return outcome


def _run(cfg: RoundConfig, stages: dict, from_stage: str | None, until_stage: str | None
         ) -> dict:
    last = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    first_forced = _check_from_stage(cfg, stages, from_stage, until_stage)
    to_run = [
        name for i, name in enumerate(STAGES[: last + 1])
        if (first_forced is not None and i >= first_forced) or not is_done(cfg, stages[name])
    ]
    for name in to_run:  # optional modules a stage will need: fail now, not hours later
        for module in stages[name].definition.needs:
            require(module)
    save_config(cfg, storage.join(cfg.output, "round.yaml"))
    outcome = {}
    t_round = time.time()
    for i, name in enumerate(STAGES[: last + 1]):
        forced = first_forced is not None and i >= first_forced
        head = f"fiqa self-train: [{i + 1}/{len(STAGES)}] {name}"
        if name not in to_run:
            print(f"{head}: done with these settings; skipped", flush=True)
            outcome[name] = "skipped"
            continue
        outcome[name] = run_stage(cfg, stages[name], head, forced)
    print(
        f"fiqa self-train: {sum(v != 'skipped' for v in outcome.values())} stage(s) run, "
        f"{sum(v == 'skipped' for v in outcome.values())} skipped, in "
        f"{time.time() - t_round:.0f} s; outputs under {cfg.output}",
        flush=True,
    )
    return outcome


def run_stage(cfg: RoundConfig, stage: Stage, head: str, forced: bool) -> str:
    """Run (or resume) one stage, recording it; returns "ran" or "resumed"."""
    old = read_record(cfg, stage.name)
    resuming = not forced and can_resume(stage, old)
    if not resuming:
        remove_outputs(stage, old)
    print(f"{head}: {'resuming' if resuming else 'running'} ({stage.definition.description})",
          flush=True)
    record = {
        "stage": stage.name,
        "key": stage.key,
        "status": "running",
        "depends_on": list(stage.definition.depends),
        "settings": stage.settings,
        "inputs": stage.inputs,
        "outputs": stage.outputs,
        "started": old["started"] if resuming else now(),
    }
    write_record(cfg, record)
    t0 = time.time()
    try:
        counts = named(stage.definition.runner)(cfg, stage)
    except Exception as e:
        write_record(cfg, {**record, "status": "failed", "failed": now(),
                           "error": f"{type(e).__name__}: {e}", "cause": format_cause(e)})
        if isinstance(e, FiqaError):
            raise  # bad settings or input: the message says what to fix
        raise StageFailed(
            f"stage {stage.name} failed: {type(e).__name__}: {e}. Fix the cause and rerun the "
            "same command: finished stages are skipped and this one resumes."
        ) from e
    seconds = round(time.time() - t0, 1) + (old.get("seconds", 0) if resuming else 0)
    record.update(status="done", counts=counts, finished=now(), seconds=round(seconds, 1))
    write_record(cfg, record)
    print(f"{head}: done in {time.time() - t0:.0f} s {json.dumps(counts)}", flush=True)
    return "resumed" if resuming else "ran"
