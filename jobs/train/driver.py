"""The training driver: validate, build the image cache, run Ray Train, report."""

from __future__ import annotations

import os
import time

from fiqa_core import storage
from fiqa_core.checkpoint_config import CheckpointConfig, read_checkpoint_config
from fiqa_core.config import config_hash, config_to_dict, save_config
from fiqa_core.errors import InputError, NotFoundError
from fiqa_core.lease import Lease
from fiqa_core.presets import get_preset
from fiqa_core.tables import check_shard_schema, read_labels, split_labels, write_parquet
from jobs import faults
from jobs.cli import JobFailed

from .config import CACHE_KEYS, TrainConfig, face_settings, validate, work_dir


class TrainingFailed(JobFailed):
    """Training stopped with an error after the configured restarts; it can be resumed."""


def finished(cfg: TrainConfig, chash: str) -> bool:
    try:
        existing = read_checkpoint_config(cfg.output)
    except NotFoundError:
        return False
    return existing.lineage.get("config_hash") == chash


def run(cfg: TrainConfig) -> CheckpointConfig:
    """Train per ``cfg``; returns the output checkpoint's config."""
    size = validate(cfg)
    chash = config_hash(cfg)
    if finished(cfg, chash):
        print(f"fiqa train: {cfg.output} is already trained with this config; nothing to do.")
        return read_checkpoint_config(cfg.output)
    # bad input is exit 2 before anything is written, busy or not
    labels = split_labels(read_labels(cfg.labels, cfg.images_root), cfg.val_fraction, cfg.seed)
    for folder in cfg.pseudo_labels:
        check_shard_schema(folder, faces=cfg.faces)
    # one training run per checkpoint: a second one is refused while this one lives
    with Lease(cfg.output, f"fiqa train output={cfg.output} preset={cfg.preset}") as lease:
        if finished(cfg, chash):  # the run that held the lease finished it
            print(f"fiqa train: {cfg.output} was trained meanwhile with this config; done.")
            return read_checkpoint_config(cfg.output)
        final = _train(cfg, size, chash, labels, lease.holder)
        lease.check()
        return final


def _train(
    cfg: TrainConfig, size: int, chash: str, labels, holder: str
) -> CheckpointConfig:

    import ray.data

    from jobs.ray_env import cluster_has_gpus, init_ray
    from jobs.train import data

    init_ray(cfg.address, min_cpus=cfg.num_workers * cfg.cpus_per_worker)
    use_gpu = cluster_has_gpus() if cfg.use_gpu is None else cfg.use_gpu
    work = work_dir(cfg)
    save_config(cfg, storage.join(work, "train_config.yaml"))
    write_parquet(labels[["path", "score", "split"]], storage.join(work, "split.parquet"))

    cache_key = config_hash(
        cfg, exclude=tuple(k for k in config_to_dict(cfg) if k not in CACHE_KEYS)
    )
    cache_uri = storage.join(work, f"cache-{size}px-{cache_key[:10]}")
    summary = data.build_cache(
        labels, cfg.pseudo_labels, cache_uri, size, cfg.max_aspect, cfg.max_pixels, cfg.seed,
        faces=face_settings(cfg),
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
    run_name = f"{cfg.preset}-{chash[:10]}"
    loop_config = {
        **config_to_dict(cfg),
        "size": size,
        "per_worker_batch": cfg.batch_size // cfg.num_workers,
        "lease_holder": holder,  # the worker that exports checks it still holds the output
        "n_sources": 1 + len(cfg.pseudo_labels),
        "selection_metric": get_preset(cfg.preset).selection_metric,
        "work": work,
        "fail_at_epoch": faults.armed("train_fails_at_epoch"),
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
            **({"faces": {"faces": cfg.faces, **face_settings(cfg)}} if cfg.faces != "none"
               else {}),  # trained on aligned faces of photos: score with the same
        },
    }
    trainer = _trainer(cfg, loop_config, use_gpu, run_name, cache_uri, size)
    # one line per epoch, printed once (Ray Train's print patch would log it a second time)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    t0 = time.time()
    try:
        trainer.fit()
    except Exception as e:
        raise TrainingFailed(
            f"training failed: {type(e).__name__}: {str(e).strip().splitlines()[-1]}. "
            f"Rerun the same command to resume from the last checkpoint in {work}/ray/{run_name}."
            " The whole cause follows."
        ) from e
    final = read_checkpoint_config(cfg.output)
    m = final.metrics
    print(
        f"fiqa train: {cfg.preset} trained in {time.time() - t0:.0f} s; best epoch "
        f"{final.lineage.get('best_epoch')}: val SRCC {m.get('srcc', float('nan')):.4f}, "
        f"PLCC {m.get('plcc', float('nan')):.4f}; checkpoint {cfg.output} (id {final.id})"
    )
    return final


def _trainer(cfg: TrainConfig, loop_config: dict, use_gpu: bool, run_name: str,
             cache_uri: str, size: int):
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.train import data
    from jobs.train.worker import train_loop

    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.join(loop_config["work"], "ray"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={
            "train": data.training_dataset(cache_uri, size, cfg.seed),
            "val": data.eval_dataset(cache_uri, size, "val", labeled_only=True),
            "calib": data.eval_dataset(cache_uri, size, "train", labeled_only=True),
        },
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def _check_enough_images(cfg: TrainConfig, summary: dict) -> None:
    train, val = summary["by_split"].get("train", 0), summary["by_split"].get("val", 0)
    if train >= 2 and val >= 4:
        return
    examples = "; ".join(
        f"{e['path']}: {e['status']} ({e['error']})" for e in summary["bad_examples"][:3]
    )
    raise InputError(
        f"{cfg.labels}: too few readable images to train ({train} train, {val} validation; "
        f"by status: {summary['by_status']}). Examples: {examples or 'none'}. "
        f"Check images_root (now {cfg.images_root or 'the labels table folder'}) and the paths."
    )
