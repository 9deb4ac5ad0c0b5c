"""The training loop that runs on every Ray Train worker (imports torch at module level;
the driver imports this module only when it builds the trainer)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import warnings

import numpy as np
import ray.train
import ray.train.torch
import torch

from fiqa_core import Scorer, create_model, fit_logistic, save_checkpoint, storage
from fiqa_core.config import save_config
from fiqa_core.errors import LeaseLost
from fiqa_core.lease import LEASE
from fiqa_core.metrics import evaluate
from fiqa_core.training import build_optimizer, build_scheduler, selection_score, train_step

from .config import TrainConfig


def train_loop(c: dict) -> None:
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
    # validation and calibration predictions: the same inference path as scoring a lake
    precision = "bf16" if c["amp"] and device.type == "cuda" else "fp32"
    scorer = Scorer(model, device=device, precision=precision)
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
        pred, label = _predict_split(scorer, "val", rank, world)
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

    _export(c, state, scorer, rank, world)


def _maybe_inject_failure(c: dict, epoch: int, rank: int) -> None:
    """Injected fault (tests only, :mod:`jobs.faults`): worker 0 fails once at this epoch."""
    if c.get("fail_at_epoch") != epoch or rank != 0:
        return
    marker = storage.join(c["work"], f"injected-failure-epoch-{epoch}")
    if storage.exists(marker):
        return
    storage.write_bytes(marker, b"1")
    raise RuntimeError(f"injected failure at epoch {epoch} (jobs.faults train_fails_at_epoch)")


def _restore(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "train_state.pt"), map_location="cpu", weights_only=True)


def _report(metrics: dict, state: dict, model, optimizer, scheduler, rank: int) -> None:
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


def _predict_split(scorer: Scorer, name: str, rank: int, world: int):
    """Raw outputs for a whole unsplit dataset; each worker takes row_id % world == rank."""
    import torch.distributed as dist

    ids, preds, labels = [], [], []
    for batch in ray.train.get_dataset_shard(name).iter_batches(
        batch_size=64, batch_format="numpy"
    ):
        mine = batch["row_id"] % world == rank
        if mine.any():
            preds.append(scorer.score_pixels(batch["pixels"][mine]))
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


def _export(c: dict, state: dict, scorer: Scorer, rank: int, world: int) -> None:
    """Best epoch's weights + a calibration fitted on the labeled TRAINING split."""
    best = state["best"]
    model = scorer.model
    model.load_state_dict(best["model"])
    model.eval()
    pred, label = _predict_split(scorer, "calib", rank, world)
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
        _check_lease(c["output"], c.get("lease_holder"))
        save_checkpoint(
            model, c["output"], calibration=calibration, metrics=metrics, lineage=lineage
        )
        settings = TrainConfig(**{f.name: c[f.name] for f in dataclasses.fields(TrainConfig)})
        save_config(settings, storage.join(c["output"], "train_config.yaml"))


def _check_lease(output: str, holder: str | None) -> None:
    """Export only while this run's driver holds the output (it may have lost it meanwhile)."""
    if holder is None:
        return
    try:
        current = json.loads(storage.read_bytes(storage.join(output, LEASE))).get("holder")
    except (FileNotFoundError, ValueError):
        current = None
    if current != holder:
        raise LeaseLost(f"{output}: another run holds this checkpoint's lease ({current}); "
                        "this run's checkpoint is not written")
