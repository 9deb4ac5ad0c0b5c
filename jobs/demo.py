"""``fiqa demo``: a whole self-training round on data made here, on a local Ray.

    fiqa demo [output=runs/demo] [labeled=640] [teacher.epochs=3 ...]

Builds a labeled set, a held-out test set and two unlabeled sets from the photographs
bundled with scikit-image, degraded at random severities (see
:mod:`jobs.demo_data`: label = 5 - 4 * severity), then runs ``fiqa self-train`` on
them at a reduced image size and prints each model's held-out SRCC and where the report
is. Nothing is downloaded: models start from random weights.

On a CPU-only machine the teachers use the student's architecture (self-training with a
same-size "noisy student" teacher): Swin-B trains at a few images/s on two cores. With a
GPU, ``teacher=auto`` picks the paper's Swin-B teacher. Any other ``key=value`` is a
setting of the round (``fiqa self-train``), e.g. ``student.epochs=3`` (``round.seed=7`` for
one named like a demo setting). The round's config
is written to ``<output>/round.yaml``, so ``fiqa self-train --config <output>/round.yaml``
continues it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass

from fiqa_core import storage
from fiqa_core.config import parse_overrides, resolve_config, setting
from jobs.cli import overrides_of, parse_args, run_job, settings_parser

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


@dataclass(frozen=True)
class DemoConfig:
    output: str = setting("runs/demo", "where the demo data and the round go")
    labeled: int = setting(640, "labeled images")
    test: int = setting(160, "held-out labeled images")
    unlabeled: int = setting(640, "images in each of the unlabeled sets A and B")
    seed: int = setting(0, "seed of the demo data")
    teacher: str = setting("auto", "teacher preset; auto: teacher-swin-b with a GPU, else "
                           "student-edgenext-xxs")


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser(
        "fiqa demo", (__doc__ or "").strip(), DemoConfig,
        epilog="Any other KEY=VALUE is a round setting (fiqa self-train --help lists them); "
        "one named like a demo setting takes a round. prefix: round.seed=7.",
    )


def split_settings(args: argparse.Namespace) -> tuple[DemoConfig, list[str]]:
    """The demo's own settings, and the rest: the round's (``student.epochs=3``).

    A round setting named like one of the demo's takes a ``round.`` prefix: ``round.seed=7``.
    """
    own, round_settings = [], []
    for item in overrides_of(args):
        key = item.partition("=")[0].strip()
        if key.startswith("round."):
            round_settings.append(item[len("round."):])
        elif key in {f.name for f in dataclasses.fields(DemoConfig)}:
            own.append(item)
        else:
            round_settings.append(item)
    return resolve_config(DemoConfig, args.config, own), round_settings


def make_data(demo: DemoConfig, data_dir: str):
    """Write the demo sets, unless the same ones are already there (a rerun then skips)."""
    from jobs.demo_data import DemoSets, write_demo_sets

    spec = {"labeled": demo.labeled, "test": demo.test, "unlabeled": demo.unlabeled,
            "seed": demo.seed}
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
    sets = write_demo_sets(data_dir, demo.labeled, demo.test, demo.unlabeled, demo.unlabeled,
                           demo.seed)
    storage.write_bytes(marker, json.dumps({"spec": spec, "sets": sets.__dict__}).encode())
    return sets


def teacher_preset(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "teacher-swin-b" if torch.cuda.is_available() else "student-edgenext-xxs"


def round_overrides(demo: DemoConfig, round_settings: list[str], sets, output: str) -> list[str]:
    values = {
        "labels": sets.labels,
        "test_labels": sets.test_labels,
        "unlabeled_a": sets.unlabeled_a,
        "unlabeled_b": sets.unlabeled_b,
        "truth": sets.truth,
        "output": os.path.join(output, "round"),
        "title": "fiqa demo round",
        "teacher.preset": teacher_preset(demo.teacher),
        **ROUND_DEFAULTS,
    }
    values.update(parse_overrides(round_settings))
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in values.items()]


def run(demo: DemoConfig, round_settings: list[str]) -> None:
    import time

    from fiqa_core import read_checkpoint_config
    from fiqa_core.lease import Lease
    from jobs import self_train

    t0 = time.time()
    output = os.path.abspath(demo.output)
    # the demo's own lease (the round takes its own on output/round): two demos on one
    # output must not rewrite each other's images
    with Lease(output, "fiqa demo (writing its images)"):
        sets = make_data(demo, os.path.join(output, "data"))
    cfg = resolve_config(
        self_train.RoundConfig, None, round_overrides(demo, round_settings, sets, output)
    )
    self_train.run(cfg)
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


def main(args: argparse.Namespace) -> int:
    return run_job("fiqa demo", lambda: run(*split_settings(args)))


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
