"""``fiqa train``: train any preset on labels + pseudo-label shards with Ray Train.

    fiqa train --config train.yaml epochs=3 num_workers=2

Settings: the defaults (the paper's recipe), then the YAML file, then ``key=value``
overrides. The resolved config is written beside the outputs. Rerunning the same command
continues an interrupted run from its last epoch; rerunning a finished one does nothing and
says so.

Modules: ``config`` (settings), ``driver`` (cache, Ray Train, result), ``data`` (the
decode-once image cache and the epoch datasets), ``worker`` (the loop on every worker).
"""

from __future__ import annotations

import argparse

from fiqa_core.config import config_hash, resolve_config

from .config import CACHE_KEYS, OPERATIONAL, TrainConfig, validate, work_dir
from .driver import TrainingFailed, run

__all__ = ["CACHE_KEYS", "OPERATIONAL", "TrainConfig", "TrainingFailed", "config_hash",
           "get_args_parser", "main", "run", "validate", "work_dir"]


def get_args_parser() -> argparse.ArgumentParser:
    from jobs.cli import settings_parser

    about = (__doc__ or "").split("\n\nModules:")[0].strip()
    return settings_parser("fiqa train", about, TrainConfig)


def main(args: argparse.Namespace) -> int:
    from jobs.cli import overrides_of, run_job

    return run_job(
        "fiqa train", lambda: run(resolve_config(TrainConfig, args.config, overrides_of(args)))
    )
