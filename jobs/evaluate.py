"""``fiqa evaluate``: a checkpoint's metrics on a labels table, and its compute cost.

    fiqa evaluate --model models/student --labels data/test.csv [--json] [--output preds.parquet]

SRCC, PLCC, KRCC and RMSE (after the 4-parameter logistic fit), the challenge score
(SRCC + PLCC) / 2, RMSE with the model's own calibration, and the model's parameters and
GMACs at its input size against the challenge limit (<= 0.5 GMACs, <= 5 M parameters).
Runs in this process, on a GPU when there is one; ``--address`` runs it as a Ray task on a
cluster instead (on a GPU node when the cluster has one).
"""

from __future__ import annotations

import argparse
import json

from fiqa_core.tables import TableError


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiqa evaluate", description=(__doc__ or "").split("\n\n")[0].strip("`")
    )
    parser.add_argument("--model", required=True, help="checkpoint directory (path or URI)")
    parser.add_argument("--labels", required=True, help="labels table: path, score (CSV/Parquet)")
    parser.add_argument("--images-root", help="relative label paths are under this")
    parser.add_argument("--output", help="write one prediction row per image to this Parquet")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--address", help="run as a Ray task on this cluster ('auto': RAY_ADDRESS)")
    return parser


def evaluate_on(args: argparse.Namespace):
    from fiqa_core.evaluation import evaluate_checkpoint

    if not args.address:
        return evaluate_checkpoint(args.model, args.labels, args.images_root)
    import ray

    from jobs.ray_env import cluster_has_gpus, init_ray

    init_ray(None if args.address == "auto" else args.address)
    gpu = cluster_has_gpus()
    task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(evaluate_checkpoint)
    return ray.get(task.remote(args.model, args.labels, args.images_root, "cuda" if gpu else "cpu"))


def main(args: argparse.Namespace) -> int:
    from fiqa_core.evaluation import format_result
    from fiqa_core.tables import write_parquet

    try:
        result, pred = evaluate_on(args)
    except (TableError, FileNotFoundError, ValueError) as e:
        print(f"fiqa evaluate: error: {e}")
        return 2
    if args.output:
        write_parquet(pred, args.output)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
