"""``fiqa train``: train any preset on labels + pseudo-label shards with Ray Train.

    fiqa train --config train.yaml epochs=3 num_workers=2

Settings: the :class:`TrainConfig` defaults (the paper's recipe), then the YAML file,
then ``key=value`` overrides. The resolved config is written beside the outputs. Rerunning
the same command continues an interrupted run from its last epoch; rerunning a finished
one does nothing and says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from fiqa_core import fit_logistic, get_preset, read_checkpoint_config, save_checkpoint, storage
from fiqa_core.config import ConfigError, config_hash, config_to_dict, resolve_config, save_config
from fiqa_core.images import DEFAULT_MAX_PIXELS
from fiqa_core.metrics import evaluate
from fiqa_core.tables import check_shard_schema, read_labels, split_labels, write_parquet
from jobs.cli import settings_parser


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Defaults are SPEC.md's recipe."""

    labels: str  # CSV/Parquet with path, score (optional split)
    output: str  # checkpoint directory to write (local path or URI)
    preset: str = "student-edgenext-xxs"
    pseudo_labels: list[str] = field(default_factory=list)  # shard folders (status ok rows)
    images_root: str | None = None  # relative label paths are under this (default: table's dir)
    work_dir: str | None = None  # run state, image cache (default: <output>.work)
    image_size: int | None = None  # default: the preset's
    pretrained: bool = True  # ImageNet-initialised backbone
    init_weights: str | None = None  # start from these weights instead
    epochs: int = 30
    batch_size: int = 32  # global, split evenly over workers
    lr: float = 1e-4
    weight_decay: float = 1e-6
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    seed: int = 42
    val_fraction: float = 0.2
    num_workers: int = 1
    use_gpu: bool | None = None  # None: when the cluster has GPUs
    cpus_per_worker: float = 1.0
    amp: bool = True  # bf16 autocast on GPU
    compile: bool = False  # torch.compile the training model
    max_aspect: float = 3.0  # long side kept <= max_aspect * size (centre) when caching
    max_pixels: int = DEFAULT_MAX_PIXELS
    shuffle_buffer: int = 256  # rows, per worker, on top of shuffled cache files
    max_failures: int = 2  # worker-group restarts from the last checkpoint
    fail_at_epoch: int | None = None  # fault injection for recovery tests: fail once (1-based)
    address: str | None = None  # Ray cluster; default RAY_ADDRESS or a local Ray


# Settings that change how a run executes but not what it computes: a run resumed with a
# different worker count or address is the same run.
OPERATIONAL = (
    "address",
    "max_failures",
    "fail_at_epoch",
    "num_workers",
    "use_gpu",
    "cpus_per_worker",
    "work_dir",
    "shuffle_buffer",
)
CACHE_KEYS = ("labels", "images_root", "pseudo_labels", "max_aspect", "max_pixels", "seed")


class TrainingFailed(RuntimeError):
    """Training stopped with an error after the configured restarts; it can be resumed."""


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser(
        "fiqa train", "Train a preset (teacher or student) with Ray Train.", TrainConfig
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(TrainConfig, args.config, args.overrides)
        run(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"fiqa train: error: {e}")
        return 2
    except TrainingFailed as e:
        print(f"fiqa train: {e}")
        return 1
    return 0


def work_dir(cfg: TrainConfig) -> str:
    w = cfg.work_dir or f"{cfg.output.rstrip('/')}.work"
    return w if "://" in w else os.path.abspath(w)


def validate(cfg: TrainConfig) -> int:
    """Check settings before any work; returns the image size."""
    preset = get_preset(cfg.preset)
    size = cfg.image_size or preset.image_size
    if size < 32 or size % 32:
        raise ConfigError(f"image_size must be a positive multiple of 32, got {size}")
    if cfg.num_workers < 1 or cfg.batch_size % cfg.num_workers:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be a multiple of num_workers ({cfg.num_workers})"
        )
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    return size


def finished(cfg: TrainConfig, chash: str) -> bool:
    try:
        existing = read_checkpoint_config(cfg.output)
    except FileNotFoundError:
        return False
    return existing.lineage.get("config_hash") == chash


def run(cfg: TrainConfig):
    """Train per ``cfg``; returns the output checkpoint's config."""
    size = validate(cfg)
    chash = config_hash(cfg, exclude=OPERATIONAL)
    if finished(cfg, chash):
        print(f"fiqa train: {cfg.output} is already trained with this config; nothing to do.")
        return read_checkpoint_config(cfg.output)
    labels = split_labels(read_labels(cfg.labels, cfg.images_root), cfg.val_fraction, cfg.seed)
    for folder in cfg.pseudo_labels:
        check_shard_schema(folder)

    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs import train_data
    from jobs.ray_env import cluster_has_gpus, init_ray

    init_ray(cfg.address, min_cpus=cfg.num_workers * cfg.cpus_per_worker)
    use_gpu = cluster_has_gpus() if cfg.use_gpu is None else cfg.use_gpu
    work = work_dir(cfg)
    save_config(cfg, storage.join(work, "train_config.yaml"))
    write_parquet(labels[["path", "score", "split"]], storage.join(work, "split.parquet"))

    cache_key = config_hash(
        cfg, exclude=tuple(k for k in config_to_dict(cfg) if k not in CACHE_KEYS)
    )
    cache_uri = storage.join(work, f"cache-{size}px-{cache_key[:10]}")
    summary = train_data.build_cache(
        labels, cfg.pseudo_labels, cache_uri, size, cfg.max_aspect, cfg.max_pixels, cfg.seed
    )
    _check_enough_images(cfg, summary)
    if summary["ok"] < summary["rows"]:
        examples = "; ".join(f"{e['path']}: {e['status']}" for e in summary["bad_examples"][:5])
        print(
            f"fiqa train: {summary['rows'] - summary['ok']} of {summary['rows']} images cannot "
            f"be used and are left out ({summary['by_status']}), e.g. {examples}"
        )

    # per-epoch progress is printed by the training loop; Ray Data's bars would bury it
    ray.data.DataContext.get_current().enable_progress_bars = False
    n_sources = 1 + len(cfg.pseudo_labels)
    run_name = f"{cfg.preset}-{chash[:10]}"
    loop_config = {
        **config_to_dict(cfg),
        "size": size,
        "per_worker_batch": cfg.batch_size // cfg.num_workers,
        "n_sources": n_sources,
        "selection_metric": get_preset(cfg.preset).selection_metric,
        "work": work,
        "lineage": {
            "config_hash": chash,
            "run": run_name,
            "labels": cfg.labels,
            "pseudo_labels": list(cfg.pseudo_labels),
            "split": storage.join(work, "split.parquet"),
            "rows": summary["by_source"],
            "bad_images": summary["rows"] - summary["ok"],
            "init_weights": cfg.init_weights,
            "pretrained": cfg.pretrained,
        },
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.join(work, "ray"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={
            "train": train_data.training_dataset(cache_uri, size, cfg.seed),
            "val": train_data.eval_dataset(cache_uri, size, "val", labeled_only=True),
            "calib": train_data.eval_dataset(cache_uri, size, "train", labeled_only=True),
        },
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    # one line per epoch, printed once (Ray Train's print patch would log it a second time)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    t0 = time.time()
    try:
        trainer.fit()
    except Exception as e:
        raise TrainingFailed(
            f"training failed: {type(e).__name__}: {str(e).strip().splitlines()[-1]}. "
            f"Rerun the same command to resume from the last checkpoint in {work}/ray/{run_name}."
        ) from e
    final = read_checkpoint_config(cfg.output)
    m = final.metrics
    print(
        f"fiqa train: {cfg.preset} trained in {time.time() - t0:.0f} s; best epoch "
        f"{final.lineage.get('best_epoch')}: val SRCC {m.get('srcc', float('nan')):.4f}, "
        f"PLCC {m.get('plcc', float('nan')):.4f}; checkpoint {cfg.output} (id {final.id})"
    )
    return final


def _check_enough_images(cfg: TrainConfig, summary: dict) -> None:
    train, val = summary["by_split"].get("train", 0), summary["by_split"].get("val", 0)
    if train >= 2 and val >= 4:
        return
    examples = "; ".join(
        f"{e['path']}: {e['status']} ({e['error']})" for e in summary["bad_examples"][:3]
    )
    raise ValueError(
        f"{cfg.labels}: too few readable images to train ({train} train, {val} validation; "
        f"by status: {summary['by_status']}). Examples: {examples or 'none'}. "
        f"Check images_root (now {cfg.images_root or 'the labels table folder'}) and the paths."
    )


# ---------------------------------------------------------------------------------------
# Runs on every Ray Train worker.


def train_loop(c: dict) -> None:
    import ray.train
    import ray.train.torch

    from fiqa_core import create_model
    from fiqa_core.training import (
        build_optimizer,
        build_scheduler,
        selection_score,
        train_step,
    )

    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(c["seed"])
    model = create_model(
        c["preset"], pretrained=c["pretrained"], weights=c["init_weights"], image_size=c["size"]
    )
    pre = model.preprocessing
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_model = ray.train.torch.prepare_model(model)  # to device, DDP when world > 1
    optimizer = build_optimizer(model, c["lr"], c["weight_decay"])
    scheduler = build_scheduler(optimizer, c["lr_step_epochs"], c["lr_gamma"])
    state = _restore(ray.train.get_checkpoint())
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        state["history"].append({"event": "resumed", "after_epoch": state["epoch"]})
        if rank == 0:
            print(f"fiqa train: resuming after epoch {state['epoch']} of {c['epochs']}")
    else:
        state = {"epoch": 0, "best": None, "history": []}  # epoch: last completed, 1-based
    if c["compile"]:
        train_model = torch.compile(train_model)

    train_shard = ray.train.get_dataset_shard("train")
    for epoch in range(state["epoch"] + 1, c["epochs"] + 1):
        _maybe_inject_failure(c, epoch, rank)
        train_model.train()
        t0, losses = time.time(), []
        seen = torch.zeros(c["n_sources"], dtype=torch.int64, device=device)
        for batch in train_shard.iter_torch_batches(
            batch_size=c["per_worker_batch"],
            local_shuffle_buffer_size=c["shuffle_buffer"] or None,
            prefetch_batches=4,  # keep crops queued while the accelerator works
            device="auto",  # uint8 moves to the device in Ray's thread, normalised there
        ):
            losses.append(
                train_step(
                    train_model, optimizer, batch["pixels"], batch["score"], pre, device, c["amp"]
                )
            )
            seen += torch.bincount(batch["source_id"], minlength=c["n_sources"])
        scheduler.step()
        seen = _sum_over_workers(seen, device)
        elapsed = time.time() - t0
        model.eval()
        pred, label = _predict_split(model, "val", pre, device, c["amp"], rank, world)
        metrics = evaluate(pred, label)
        score = selection_score(metrics, c["selection_metric"])
        improved = state["best"] is None or score > state["best"]["score"]
        if improved:
            state["best"] = {
                "score": score,
                "epoch": epoch,
                "metrics": metrics,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        report = {
            "epoch": epoch,
            "loss": float(torch.stack(losses).mean()) if losses else float("nan"),
            **{k: metrics[k] for k in ("srcc", "plcc", "krcc", "rmse", "challenge")},
            "selection": score,
            "best_selection": state["best"]["score"],
            "best_epoch": state["best"]["epoch"],
            "rows_seen": int(seen.sum()),
            "rows_by_source": [int(v) for v in seen],
            "images_per_s": float(seen.sum()) / max(elapsed, 1e-9),
        }
        state.update(epoch=epoch)
        state["history"].append({"event": "epoch", **report})
        if rank == 0:
            print(
                f"fiqa train: epoch {epoch}/{c['epochs']} loss {report['loss']:.4f} "
                f"val SRCC {metrics['srcc']:.4f} PLCC {metrics['plcc']:.4f} "
                f"({report['rows_seen']} images, {report['images_per_s']:.1f} images/s)"
                + (" *best*" if improved else "")
            )
        _report(report, state, model, optimizer, scheduler, rank)

    _export(c, state, model, pre, device, rank, world)


def _maybe_inject_failure(c: dict, epoch: int, rank: int) -> None:
    if c.get("fail_at_epoch") != epoch or rank != 0:
        return
    marker = storage.join(c["work"], f"injected-failure-epoch-{epoch}")
    if storage.exists(marker):
        return
    storage.write_bytes(marker, b"1")
    raise RuntimeError(f"injected failure at epoch {epoch} (fail_at_epoch setting)")


def _restore(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "train_state.pt"), map_location="cpu", weights_only=True)


def _report(metrics: dict, state: dict, model, optimizer, scheduler, rank: int) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            os.path.join(d, "train_state.pt"),
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _sum_over_workers(t: torch.Tensor, device) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        t = t.to(device)
        dist.all_reduce(t)
    return t.cpu()


def _predict_split(model, name: str, pre, device, amp: bool, rank: int, world: int):
    """Predictions for a whole unsplit dataset; each worker takes row_id % world == rank."""
    import ray.train
    import torch.distributed as dist

    from fiqa_core.training import predict

    ids, preds, labels = [], [], []
    for batch in ray.train.get_dataset_shard(name).iter_batches(
        batch_size=64, batch_format="numpy"
    ):
        mine = batch["row_id"] % world == rank
        if mine.any():
            preds.append(predict(model, batch["pixels"][mine], pre, device, amp))
            labels.append(batch["score"][mine])
            ids.append(batch["row_id"][mine])
    part = tuple(np.concatenate(x) if x else np.zeros(0) for x in (ids, preds, labels))
    if world > 1 and dist.is_initialized():
        parts = [None] * world
        dist.all_gather_object(parts, part)
    else:
        parts = [part]
    ids, preds, labels = (np.concatenate([p[i] for p in parts]) for i in range(3))
    order = np.argsort(ids, kind="stable")
    return preds[order], labels[order]


def _export(c: dict, state: dict, model, pre, device, rank: int, world: int) -> None:
    """Best epoch's weights + a calibration fitted on the labeled TRAINING split."""
    best = state["best"]
    model.load_state_dict(best["model"])
    model.eval()
    pred, label = _predict_split(model, "calib", pre, device, c["amp"], rank, world)
    calibration = fit_logistic(pred, label)
    if rank == 0:
        lineage = {
            **c["lineage"],
            "best_epoch": best["epoch"],
            "epochs": c["epochs"],
            "calibration_fitted_on": f"labeled train split ({len(label)} images)",
            "history": state["history"],
        }
        metrics = {**best["metrics"], "selection_metric": c["selection_metric"]}
        save_checkpoint(
            model, c["output"], calibration=calibration, metrics=metrics, lineage=lineage
        )
        settings = TrainConfig(**{k: c[k] for k in TrainConfig.__dataclass_fields__})
        save_config(settings, storage.join(c["output"], "train_config.yaml"))


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
