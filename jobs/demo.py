"""``fiqa demo``: a whole self-training round on data made here, on a local Ray.

    fiqa demo [--output runs/demo] [--labeled 640] [teacher.epochs=3 ...]

Builds a labeled set, a held-out test set and two unlabeled sets from the photographs
bundled with scikit-image, degraded at random severities (see
:mod:`fiqa_core.synthetic`: label = 5 - 4 * severity), then runs ``fiqa self-train`` on
them at a reduced image size and prints each model's held-out SRCC and where the report
is. Nothing is downloaded: models start from random weights.

On a CPU-only machine the teachers use the student's architecture (self-training with a
same-size "noisy student" teacher): Swin-B trains at a few images/s on two cores. With a
GPU, ``--teacher auto`` picks the paper's Swin-B teacher. The round's config is written to
``<output>/round.yaml``, so ``fiqa self-train --config <output>/round.yaml`` continues it.
"""

from __future__ import annotations

import argparse
import json
import os

from fiqa_core import storage
from fiqa_core.config import ConfigError, parse_overrides

# the demo's round: small images from scratch, so a higher learning rate than the paper's
ROUND_DEFAULTS = {
    "teacher.image_size": 64,
    "teacher.pretrained": False,
    "teacher.lr": 1e-3,
    "teacher.epochs": 10,
    "enhanced_teacher.epochs": 5,
    "student.image_size": 64,
    "student.pretrained": False,
    "student.lr": 1e-3,
    "student.epochs": 8,
    "test_fraction": 0.2,  # unused: the demo has its own test set
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiqa demo",
        description="Run a whole self-training round on demo data made from bundled photos.",
    )
    parser.add_argument("--output", default="runs/demo", help="where data and round go")
    parser.add_argument("--labeled", type=int, default=640, help="labeled images")
    parser.add_argument("--test", type=int, default=160, help="held-out labeled images")
    parser.add_argument("--unlabeled", type=int, default=640, help="images in each of A and B")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument(
        "--teacher", default="auto",
        help="teacher preset; auto: teacher-swin-b with a GPU, else student-edgenext-xxs",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="round settings, e.g. teacher.epochs=3")
    return parser


def make_data(args: argparse.Namespace, data_dir: str):
    """Write the demo sets, unless the same ones are already there (a rerun then skips)."""
    from fiqa_core.synthetic import DemoSets, write_demo_sets

    spec = {"labeled": args.labeled, "test": args.test, "unlabeled": args.unlabeled,
            "seed": args.seed}
    marker = os.path.join(data_dir, "demo_data.json")
    if os.path.exists(marker):
        with open(marker) as f:
            saved = json.load(f)
        if saved["spec"] == spec:
            return DemoSets(**saved["sets"])
    if os.path.exists(data_dir):
        import shutil

        shutil.rmtree(data_dir)
    print(f"fiqa demo: writing demo images to {data_dir}", flush=True)
    sets = write_demo_sets(data_dir, args.labeled, args.test, args.unlabeled, args.unlabeled,
                           args.seed)
    storage.write_bytes(marker, json.dumps({"spec": spec, "sets": sets.__dict__}).encode())
    return sets


def teacher_preset(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "teacher-swin-b" if torch.cuda.is_available() else "student-edgenext-xxs"


def round_overrides(args: argparse.Namespace, sets, output: str) -> list[str]:
    values = {
        "labels": sets.labels,
        "test_labels": sets.test_labels,
        "unlabeled_a": sets.unlabeled_a,
        "unlabeled_b": sets.unlabeled_b,
        "truth": sets.truth,
        "output": os.path.join(output, "round"),
        "title": "fiqa demo round",
        "teacher.preset": teacher_preset(args.teacher),
        **ROUND_DEFAULTS,
    }
    values.update(parse_overrides(args.overrides))
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in values.items()]


def main(args: argparse.Namespace) -> int:
    import logging
    import time

    from fiqa_core import read_checkpoint_config
    from fiqa_core.config import resolve_config
    from jobs import self_train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    output = os.path.abspath(args.output)
    try:
        sets = make_data(args, os.path.join(output, "data"))
        cfg = resolve_config(self_train.RoundConfig, None, round_overrides(args, sets, output))
        self_train.run(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"fiqa demo: error: {e}")
        return 2
    except self_train.StageFailed as e:
        print(f"fiqa demo: {e}")
        return 1
    paths = self_train.layout(self_train.absolute_paths(cfg))
    metrics = json.loads(storage.read_bytes(paths["metrics"]))
    student = read_checkpoint_config(paths["student"]).lineage["history"]
    curve = [round(e["srcc"], 3) for e in student if e["event"] == "epoch"]
    print(f"fiqa demo: round finished in {time.time() - t0:.0f} s")
    print(f"fiqa demo: the student's validation SRCC by epoch: {curve}")
    for name, label in (("teacher0", "teacher T0"), ("teacher1", "teacher T1"),
                        ("student", "student")):
        m = metrics[name]["metrics"]
        print(f"fiqa demo: held-out SRCC {m['srcc']:.3f} (PLCC {m['plcc']:.3f}, "
              f"{m['images']} images): {label} ({metrics[name]['preset']})")
    print(f"fiqa demo: report: {paths['report']}")
    print(f"fiqa demo: continue this round with: fiqa self-train --config "
          f"{storage.join(cfg.output, 'round.yaml')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
