"""``fiqa self-train``: one self-training round, stage by stage, each stage recorded (what it
does: :mod:`jobs.self_train.round`, its ``--help``).

Modules: ``config`` (settings, layout, role jobs), ``stages`` (the stage list and the
plan), ``runners`` (what each stage does), ``records``, ``report``, ``round`` (the run).
"""

from .config import RoundConfig, absolute_paths, layout
from .records import read_record, record_uri
from .round import StageFailed, get_args_parser, main, run
from .stages import MODELS, STAGE_DEFS, STAGES, plan_stages, stage_jobs, stage_keys

__all__ = ["MODELS", "STAGES", "STAGE_DEFS", "RoundConfig", "StageFailed", "absolute_paths",
           "get_args_parser", "layout", "main", "plan_stages", "read_record", "record_uri",
           "run", "stage_jobs", "stage_keys"]
