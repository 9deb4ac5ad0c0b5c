"""``fiqa self-train``: one self-training round, stage by stage, each stage recorded.

    fiqa self-train --config round.yaml [teacher.epochs=3 ...] [--from-stage S] [--until-stage S]

holdout -> teacher0 (labels) -> pseudo_a (T0 scores set A) -> teacher1 (labels + A)
-> pseudo_b (T1 scores set B) -> student (labels + A + B) -> evaluate (all three on the
held-out labels) -> report. Each stage runs the same code as the single jobs
(``fiqa train``, ``fiqa pseudo-label``, ``fiqa evaluate``).

Every stage writes ``<output>/stages/<stage>.json``: a key (hash of the settings that
determine its result plus the keys of the stages it reads), settings, inputs, outputs,
counts and times. A rerun skips stages whose key is unchanged and whose outputs exist;
a changed key removes the stage's old outputs and reruns it, and so everything after it
(their keys include its key); a stage recorded as running resumes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace

import fsspec

from fiqa_core import storage
from fiqa_core.config import (
    ConfigError,
    build_config,
    config_to_dict,
    resolve_config,
    save_config,
)
from jobs import score as score_job
from jobs import train as train_job
from jobs.cli import settings_parser

STAGES = (
    "holdout",
    "teacher0",
    "pseudo_a",
    "teacher1",
    "pseudo_b",
    "student",
    "evaluate",
    "report",
)
DEPENDS = {
    "holdout": (),
    "teacher0": ("holdout",),
    "pseudo_a": ("teacher0",),
    "teacher1": ("holdout", "pseudo_a"),
    "pseudo_b": ("teacher1",),
    "student": ("holdout", "pseudo_a", "pseudo_b"),
    "evaluate": ("holdout", "teacher0", "teacher1", "student"),
    "report": ("evaluate", "pseudo_a", "pseudo_b"),
}
MODELS = ("teacher0", "teacher1", "student")
DESCRIPTION = {
    "holdout": "split off the held-out test labels",
    "teacher0": "train teacher T0 on the labels",
    "pseudo_a": "T0 pseudo-labels set A",
    "teacher1": "train the enhanced teacher T1 on labels + A",
    "pseudo_b": "T1 pseudo-labels set B",
    "student": "train the student on labels + A + B",
    "evaluate": "evaluate T0, T1 and the student on the held-out labels",
    "report": "write the round report",
}
# Paths the round wires between stages: a role may not set them.
WIRED_TRAIN = ("labels", "output", "pseudo_labels", "images_root", "address")
WIRED_SCORE = ("input", "model", "output", "run_date", "address")
SCORE_OPERATIONAL = (
    "batch_size",
    "decode_batch_size",
    "read_threads",
    "scorers",
    "scorer_cpus",
    "use_gpu",
    "address",
    "fail_after_batches",
)


@dataclass(frozen=True)
class RoundConfig:
    """A round: its inputs and output once, then job settings per role."""

    labels: str  # labeled table (CSV/Parquet: path, score)
    unlabeled_a: str  # image folder/prefix, glob or manifest
    unlabeled_b: str
    output: str  # everything the round writes goes below this
    test_labels: str | None = None  # held-out labels; default: test_fraction of `labels`
    test_fraction: float = 0.1
    seed: int = 42
    images_root: str | None = None  # relative label paths are under this (default: table's dir)
    truth: str | None = None  # optional true labels of unlabeled images, for the report
    title: str = "fiqa self-training round"
    teacher: dict = field(default_factory=dict)  # fiqa train settings for T0 (and T1)
    enhanced_teacher: dict = field(default_factory=dict)  # T1: on top of `teacher`
    student: dict = field(default_factory=dict)  # fiqa train settings for the student
    pseudo_label: dict = field(default_factory=dict)  # fiqa pseudo-label settings (A and B)
    address: str | None = None  # Ray cluster; default RAY_ADDRESS or a local Ray


class StageFailed(RuntimeError):
    """A stage stopped with an error; rerunning the same command resumes it."""


@dataclass(frozen=True)
class Stage:
    name: str
    key: str
    settings: dict
    inputs: dict
    outputs: dict  # name -> path; all must exist for a done stage to be skipped
    job: object = None  # TrainConfig / ScoreConfig for the job stages


def get_args_parser() -> argparse.ArgumentParser:
    parser = settings_parser(
        "fiqa self-train",
        "Run one self-training round: T0, pseudo-labels A, T1, pseudo-labels B, "
        "student, evaluation, report.",
        RoundConfig,
        epilog=". Role settings take a dot: teacher.epochs=3. Stages: " + ", ".join(STAGES),
    )
    parser.add_argument("--from-stage", choices=STAGES, help="rerun from this stage on")
    parser.add_argument("--until-stage", choices=STAGES, help="stop after this stage")
    return parser


def main(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(RoundConfig, args.config, args.overrides)
        run(cfg, from_stage=args.from_stage, until_stage=args.until_stage)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"fiqa self-train: error: {e}")
        return 2
    except StageFailed as e:
        print(f"fiqa self-train: {e}")
        return 1
    return 0


# -- paths and stage settings --------------------------------------------------------------


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def absolute_paths(cfg: RoundConfig) -> RoundConfig:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    names = ("labels", "unlabeled_a", "unlabeled_b", "output", "test_labels", "images_root")
    return replace(cfg, **{n: _absolute(getattr(cfg, n)) for n in (*names, "truth")})


def layout(cfg: RoundConfig) -> dict[str, str]:
    j = lambda *p: storage.join(cfg.output, *p)  # noqa: E731
    return {
        "train_labels": j("data", "train_labels.parquet"),
        "test_labels": j("data", "test_labels.parquet"),
        "teacher0": j("models", "teacher0"),
        "teacher1": j("models", "teacher1"),
        "student": j("models", "student"),
        "pseudo_a": j("pseudo", "a"),
        "pseudo_b": j("pseudo", "b"),
        "metrics": j("eval", "metrics.json"),
        "predictions": j("eval", "predictions"),
        "report": j("report", "report.md"),
        "stages": j("stages"),
    }


def _refuse_wired(role: str, values: dict, wired: tuple[str, ...]) -> None:
    for key in values:
        if key in wired:
            where = "address" if key == "address" else "labels, unlabeled_a/b or output"
            raise ConfigError(
                f"{role}.{key}: the round sets {key} itself; set the round's {where} instead"
            )


def _train_config(cfg: RoundConfig, role: str, values: dict, **wired) -> train_job.TrainConfig:
    _refuse_wired(role, values, WIRED_TRAIN)
    tc = build_config(
        train_job.TrainConfig, {**values, **wired, "address": cfg.address}, f"round {role}"
    )
    train_job.validate(tc)
    return tc


def _file_facts(uri: str) -> dict:
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"{uri}: labels table not found")
    from fiqa_core.lake import facts

    return facts(fs.info(path))


def _key(settings: dict, upstream: list[str]) -> str:
    blob = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def stage_jobs(cfg: RoundConfig) -> dict:
    """The ``fiqa train`` / ``fiqa pseudo-label`` config of each job stage, validated."""
    p = layout(cfg)
    teacher = {"preset": "teacher-swin-b", **cfg.teacher}
    student = {"preset": "student-edgenext-xxs", **cfg.student}
    jobs = {
        "teacher0": _train_config(
            cfg, "teacher", teacher, labels=p["train_labels"], output=p["teacher0"]
        ),
        "teacher1": _train_config(
            cfg, "enhanced_teacher", {**teacher, **cfg.enhanced_teacher},
            labels=p["train_labels"], output=p["teacher1"], pseudo_labels=[p["pseudo_a"]],
        ),
        "student": _train_config(
            cfg, "student", student, labels=p["train_labels"], output=p["student"],
            pseudo_labels=[p["pseudo_a"], p["pseudo_b"]],
        ),
    }
    _refuse_wired("pseudo_label", cfg.pseudo_label, WIRED_SCORE)
    for name, images, model in (("pseudo_a", "unlabeled_a", "teacher0"),
                                ("pseudo_b", "unlabeled_b", "teacher1")):
        jobs[name] = build_config(
            score_job.ScoreConfig,
            {**cfg.pseudo_label, "input": getattr(cfg, images), "model": p[model],
             "output": p[name], "address": cfg.address},
            "round pseudo_label",
        )
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {cfg.test_fraction}")
    return jobs


def plan_stages(cfg: RoundConfig) -> dict[str, Stage]:
    """Every stage's settings, inputs, outputs and key; all settings validated here."""
    p = layout(cfg)
    jobs = stage_jobs(cfg)
    holdout = {
        "labels": cfg.labels,
        "labels_file": _file_facts(cfg.labels),
        "test_labels": cfg.test_labels,
        "test_labels_file": _file_facts(cfg.test_labels) if cfg.test_labels else None,
        "test_fraction": None if cfg.test_labels else cfg.test_fraction,
        "seed": cfg.seed,
        "images_root": cfg.images_root,
    }
    settings = {
        "holdout": holdout,
        "evaluate": {"test_labels": p["test_labels"]},
        "report": {"title": cfg.title, "truth": cfg.truth},
    }
    for name, job in jobs.items():
        operational = train_job.OPERATIONAL if name in MODELS else SCORE_OPERATIONAL
        settings[name] = {k: v for k, v in config_to_dict(job).items() if k not in operational}
    inputs = {
        "holdout": {"labels": cfg.labels, "test_labels": cfg.test_labels},
        "teacher0": {"labels": p["train_labels"]},
        "pseudo_a": {"images": cfg.unlabeled_a, "model": p["teacher0"]},
        "teacher1": {"labels": p["train_labels"], "pseudo_labels": [p["pseudo_a"]]},
        "pseudo_b": {"images": cfg.unlabeled_b, "model": p["teacher1"]},
        "student": {"labels": p["train_labels"], "pseudo_labels": [p["pseudo_a"], p["pseudo_b"]]},
        "evaluate": {"labels": p["test_labels"], "models": [p[m] for m in MODELS]},
        "report": {"metrics": p["metrics"], "pseudo_labels": [p["pseudo_a"], p["pseudo_b"]]},
    }
    outputs = {
        "holdout": {"train_labels": p["train_labels"], "test_labels": p["test_labels"]},
        "teacher0": {"checkpoint": p["teacher0"]},
        "pseudo_a": {"shards": p["pseudo_a"]},
        "teacher1": {"checkpoint": p["teacher1"]},
        "pseudo_b": {"shards": p["pseudo_b"]},
        "student": {"checkpoint": p["student"]},
        "evaluate": {"metrics": p["metrics"], "predictions": p["predictions"]},
        "report": {"report": p["report"]},
    }
    stages: dict[str, Stage] = {}
    for name in STAGES:
        key = _key(settings[name], [stages[d].key for d in DEPENDS[name]])
        stages[name] = Stage(name, key, settings[name], inputs[name], outputs[name],
                             jobs.get(name))
    return stages


def stage_keys(cfg: RoundConfig) -> dict[str, str]:
    return {name: s.key for name, s in plan_stages(absolute_paths(cfg)).items()}


# -- records ------------------------------------------------------------------------------


def record_uri(cfg: RoundConfig, stage: str) -> str:
    return storage.join(layout(cfg)["stages"], f"{stage}.json")


def read_record(cfg: RoundConfig, stage: str) -> dict | None:
    uri = record_uri(cfg, stage)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def _write_record(cfg: RoundConfig, record: dict) -> None:
    storage.write_bytes(record_uri(cfg, record["stage"]), json.dumps(record, indent=2).encode())


def is_done(cfg: RoundConfig, stage: Stage) -> bool:
    rec = read_record(cfg, stage.name)
    return (
        rec is not None
        and rec.get("status") == "done"
        and rec.get("key") == stage.key
        and all(storage.exists(p) for p in stage.outputs.values())
    )


def _remove(uri: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _remove_outputs(stage: Stage, old: dict | None) -> None:
    """A stage's outputs (current and previously recorded) and a training run's state."""
    paths = set(stage.outputs.values()) | set((old or {}).get("outputs", {}).values())
    for path in sorted(paths):
        _remove(path)
        if stage.name in MODELS:
            _remove(train_job.work_dir(replace(stage.job, output=path)))


# -- running ------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run(cfg: RoundConfig, from_stage: str | None = None, until_stage: str | None = None) -> dict:
    """Run the round's stages in order; returns ``{stage: "skipped" | "ran" | "resumed"}``."""
    cfg = absolute_paths(cfg)
    stages = plan_stages(cfg)
    last = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    first_forced = STAGES.index(from_stage) if from_stage else None
    if first_forced is not None:
        if first_forced > last:
            raise ConfigError(f"--from-stage {from_stage} comes after --until-stage {until_stage}")
        for name in STAGES[:first_forced]:
            if not is_done(cfg, stages[name]):
                raise ConfigError(
                    f"--from-stage {from_stage}: the earlier stage {name} is not done with "
                    "these settings; run without --from-stage first"
                )
    save_config(cfg, storage.join(cfg.output, "round.yaml"))
    outcome = {}
    t_round = time.time()
    for i, name in enumerate(STAGES[: last + 1]):
        stage = stages[name]
        forced = first_forced is not None and i >= first_forced
        head = f"fiqa self-train: [{i + 1}/{len(STAGES)}] {name}"
        if not forced and is_done(cfg, stage):
            print(f"{head}: done with these settings; skipped", flush=True)
            outcome[name] = "skipped"
            continue
        old = read_record(cfg, name)
        resuming = (
            not forced and old is not None and old.get("status") == "running"
            and old.get("key") == stage.key
        )
        if not resuming:
            _remove_outputs(stage, old)
        print(f"{head}: {'resuming' if resuming else 'running'} ({DESCRIPTION[name]})",
              flush=True)
        record = {
            "stage": name,
            "key": stage.key,
            "status": "running",
            "depends_on": list(DEPENDS[name]),
            "settings": stage.settings,
            "inputs": stage.inputs,
            "outputs": stage.outputs,
            "started": old["started"] if resuming else _now(),
        }
        _write_record(cfg, record)
        t0 = time.time()
        try:
            counts = RUNNERS[name](cfg, stage)
        except (ConfigError, StageFailed):
            raise
        except Exception as e:
            raise StageFailed(
                f"stage {name} failed: {type(e).__name__}: {e}. Fix the cause and rerun the "
                "same command: finished stages are skipped and this one resumes."
            ) from e
        seconds = round(time.time() - t0, 1) + (old.get("seconds", 0) if resuming else 0)
        record.update(status="done", counts=counts, finished=_now(), seconds=round(seconds, 1))
        _write_record(cfg, record)
        print(f"{head}: done in {time.time() - t0:.0f} s {json.dumps(counts)}", flush=True)
        outcome[name] = "resumed" if resuming else "ran"
    print(
        f"fiqa self-train: {sum(v != 'skipped' for v in outcome.values())} stage(s) run, "
        f"{sum(v == 'skipped' for v in outcome.values())} skipped, in "
        f"{time.time() - t_round:.0f} s; outputs under {cfg.output}",
        flush=True,
    )
    return outcome


def _holdout(cfg: RoundConfig, stage: Stage) -> dict:
    from fiqa_core.tables import read_labels, seeded_subset, write_parquet

    labels = read_labels(cfg.labels, cfg.images_root)
    if cfg.test_labels:
        test = read_labels(cfg.test_labels, cfg.images_root)
        shared = set(test["path"]) & set(labels["path"])
        if shared:
            raise ConfigError(
                f"{cfg.test_labels}: {len(shared)} held-out image(s) are also in {cfg.labels}, "
                f"e.g. {sorted(shared)[0]}; a test image must not be trained on"
            )
        train = labels
    else:
        chosen = seeded_subset(labels["path"], cfg.test_fraction, cfg.seed)
        train, test = labels[~chosen], labels[chosen]
    if len(test) < 4:
        raise ConfigError(f"only {len(test)} held-out images; evaluation needs at least 4")
    write_parquet(train.reset_index(drop=True), stage.outputs["train_labels"])
    write_parquet(test[["path", "score"]].reset_index(drop=True), stage.outputs["test_labels"])
    return {"labeled": len(labels), "train": len(train), "test": len(test)}


def _train(cfg: RoundConfig, stage: Stage) -> dict:
    try:
        final = train_job.run(stage.job)
    except train_job.TrainingFailed as e:
        raise StageFailed(f"stage {stage.name}: {e}") from e
    return {
        "model": final.id,
        "rows": final.lineage.get("rows"),
        "best_epoch": final.lineage.get("best_epoch"),
        "val_srcc": round(final.metrics.get("srcc", float("nan")), 4),
    }


def _pseudo_label(cfg: RoundConfig, stage: Stage) -> dict:
    summary = score_job.run(stage.job, nightly=False)
    return {"rows": summary["rows"], "by_status": summary["by_status"], "model": summary["model"]}


def _evaluate(cfg: RoundConfig, stage: Stage) -> dict:
    import ray

    from fiqa_core.evaluation import evaluate_checkpoint
    from fiqa_core.tables import write_parquet
    from jobs.ray_env import cluster_has_gpus, init_ray

    init_ray(cfg.address)
    gpu = cluster_has_gpus()
    # in a Ray task: on a cluster the driver may sit on a head node with no accelerator
    task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(evaluate_checkpoint)
    p = layout(cfg)
    refs = {m: task.remote(p[m], p["test_labels"], None, "cuda" if gpu else "cpu") for m in MODELS}
    results = {}
    for name, ref in refs.items():
        result, pred = ray.get(ref)
        write_parquet(pred, storage.join(p["predictions"], f"{name}.parquet"))
        results[name] = result
    storage.write_bytes(p["metrics"], json.dumps(results, indent=2).encode())
    return {m: round(r["metrics"]["srcc"], 4) for m, r in results.items()}


def _report(cfg: RoundConfig, stage: Stage) -> dict:
    from fiqa_core.report import write_report

    p = layout(cfg)
    records = {name: read_record(cfg, name) for name in STAGES if name != "report"}
    return write_report(
        folder=storage.join(cfg.output, "report"),
        title=cfg.title,
        metrics=json.loads(storage.read_bytes(p["metrics"])),
        predictions={m: storage.join(p["predictions"], f"{m}.parquet") for m in MODELS},
        pseudo={"A": p["pseudo_a"], "B": p["pseudo_b"]},
        train_labels=p["train_labels"],
        stages=records,
        truth=cfg.truth,
    )


RUNNERS = {
    "holdout": _holdout,
    "teacher0": _train,
    "pseudo_a": _pseudo_label,
    "teacher1": _train,
    "pseudo_b": _pseudo_label,
    "student": _train,
    "evaluate": _evaluate,
    "report": _report,
}


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
