"""``fiqa evaluate``: a checkpoint's metrics on a labels table, and its compute cost.

    fiqa evaluate model=models/student labels=data/test.csv [json=true] [output=preds.parquet]

SRCC, PLCC, KRCC and RMSE (after the 4-parameter logistic fit), the challenge score
(SRCC + PLCC) / 2, RMSE with the model's own calibration, and the model's parameters and
GMACs at its input size against the challenge limit (<= 0.5 GMACs, <= 5 M parameters).
Runs in this process, on a GPU when there is one; ``address`` runs it as a Ray task on a
cluster instead (on a GPU node when the cluster has one).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from fiqa_core.config import resolve_config, setting
from jobs.cli import overrides_of, parse_args, run_job, settings_parser


@dataclass(frozen=True)
class EvaluateConfig:
    model: str = setting(help="checkpoint directory (path or URI)")
    labels: str = setting(help="labels table: path, score (CSV/Parquet)")
    images_root: str | None = setting(None, "relative label paths are under this; unset: the "
                                      "table's folder")
    output: str | None = setting(None, "write one prediction row per image to this Parquet")
    faces: str = setting("auto", "auto: treat the images as the model was trained (face "
                         "crops, or photos whose largest face is aligned first: its lineage); "
                         "none: face crops; largest: photos (a photo without a face is "
                         "unscorable, status no_face)", choices=("auto", "none", "largest"))
    json: bool = setting(False, "print the result as JSON")
    address: str | None = setting(None, "run as a Ray task on this cluster ('auto': "
                                  "RAY_ADDRESS); unset: in this process")


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa evaluate", (__doc__ or "").strip(), EvaluateConfig)


def evaluate_on(cfg: EvaluateConfig):
    from fiqa_core.evaluation import evaluate_checkpoint
    from fiqa_core.extras import require

    require("fvcore")  # the cost comes last: fail before the predictions, not after
    if not cfg.address:
        return evaluate_checkpoint(cfg.model, cfg.labels, cfg.images_root, faces=cfg.faces)
    import ray

    from jobs.ray_env import cluster_has_gpus, init_ray

    init_ray(None if cfg.address == "auto" else cfg.address)
    gpu = cluster_has_gpus()
    task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(evaluate_checkpoint)
    return ray.get(task.remote(cfg.model, cfg.labels, cfg.images_root, "cuda" if gpu else "cpu",
                               cfg.faces))


def run(cfg: EvaluateConfig) -> dict:
    from fiqa_core.evaluation import format_result
    from fiqa_core.tables import write_parquet

    result, pred = evaluate_on(cfg)
    if cfg.output:
        write_parquet(pred, cfg.output)
    print(json.dumps(result, indent=2) if cfg.json else format_result(result))
    return result


def main(args: argparse.Namespace) -> int:
    return run_job(
        "fiqa evaluate",
        lambda: run(resolve_config(EvaluateConfig, args.config, overrides_of(args))),
    )


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
