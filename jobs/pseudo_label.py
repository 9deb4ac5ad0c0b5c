"""``fiqa pseudo-label``: score an unlabeled set with a teacher into pseudo-label shards.

The same pipeline as ``fiqa score`` (see :mod:`jobs.score`), written to ``<output>/``
without date partitions; ``score`` is the teacher's raw output mapped onto the label
scale by its calibration (fitted on its labeled training split).
"""

from __future__ import annotations

import argparse

from jobs import score
from jobs.cli import parse_args


def get_args_parser() -> argparse.ArgumentParser:
    return score.get_args_parser(prog="fiqa pseudo-label")


def main(args: argparse.Namespace) -> int:
    return score.main(args, nightly=False)


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
