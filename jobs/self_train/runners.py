"""What each stage does: every runner takes the round's config and its planned stage and
returns the counts its record keeps. Each calls the same code as the single jobs."""

from __future__ import annotations

import json

from fiqa_core import storage
from fiqa_core.errors import ConfigError


def holdout(cfg, stage) -> dict:
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


def train(cfg, stage) -> dict:
    from jobs.train import run

    final = run(stage.job)
    return {
        "model": final.id,
        "rows": final.lineage.get("rows"),
        "best_epoch": final.lineage.get("best_epoch"),
        "val_srcc": round(final.metrics.get("srcc", float("nan")), 4),
    }


def pseudo_label(cfg, stage) -> dict:
    from jobs.score import run

    summary = run(stage.job, nightly=False)
    return {"rows": summary["rows"], "by_status": summary["by_status"], "model": summary["model"]}


def evaluate(cfg, stage) -> dict:
    import ray

    from fiqa_core.evaluation import evaluate_checkpoint
    from fiqa_core.tables import write_parquet
    from jobs.ray_env import cluster_has_gpus, init_ray

    init_ray(cfg.address)
    gpu = cluster_has_gpus()
    # in a Ray task: on a cluster the driver may sit on a head node with no accelerator
    task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(evaluate_checkpoint)
    models = dict(zip(stage.models, stage.inputs["models"], strict=True))
    labels = stage.inputs["labels"]
    refs = {m: task.remote(path, labels, None, "cuda" if gpu else "cpu")
            for m, path in models.items()}
    results = {}
    for name, ref in refs.items():
        result, pred = ray.get(ref)
        write_parquet(pred, storage.join(stage.outputs["predictions"], f"{name}.parquet"))
        results[name] = result
    storage.write_bytes(stage.outputs["metrics"], json.dumps(results, indent=2).encode())
    return {m: round(r["metrics"]["srcc"], 4) for m, r in results.items()}


def report(cfg, stage) -> dict:
    from .config import layout
    from .records import read_record
    from .report import write_report
    from .stages import STAGES  # stages.py names runners, never imports them

    p = layout(cfg)
    metrics = json.loads(storage.read_bytes(stage.inputs["metrics"]))
    labels = list(stage.models.values())  # T0, T1, student
    return write_report(
        folder=storage.join(cfg.output, "report"),
        title=cfg.title,
        metrics={stage.models[m]: r for m, r in metrics.items()},
        predictions={label: storage.join(p["predictions"], f"{m}.parquet")
                     for m, label in stage.models.items()},
        pseudo=dict(zip(("A", "B"), stage.inputs["pseudo_labels"], strict=True)),
        train_labels=p["train_labels"],
        stages={name: read_record(cfg, name) for name in STAGES if name != stage.name},
        truth=cfg.truth,
        pairs=list(zip(labels[:-1], labels[1:], strict=True)),
    )
