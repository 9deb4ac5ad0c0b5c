"""``fiqa self-train``: one self-training round, stage by stage, each stage recorded.

    fiqa self-train --config round.yaml [teacher.epochs=3 ...] [--from-stage S] [--until-stage S]

holdout -> teacher0 (labels) -> pseudo_a (T0 scores set A) -> teacher1 (labels + A)
-> pseudo_b (T1 scores set B) -> student (labels + A + B) -> evaluate (all three on the
held-out labels) -> report. Each stage runs the same code as the single jobs
(``fiqa train``, ``fiqa pseudo-label``, ``fiqa evaluate``).

Every stage writes ``<output>/stages/<stage>.json``: a key (hash of the settings that
determine its result plus the keys of the stages it reads), settings, inputs, outputs,
counts and times (and, for a failed stage, the error with its whole cause). A rerun skips
stages whose key is unchanged and whose outputs exist; a changed key removes the stage's
old outputs and reruns it, and so everything after it (their keys include its key); a stage
recorded as running or failed resumes.

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
