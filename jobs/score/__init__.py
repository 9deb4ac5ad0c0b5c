"""``fiqa pseudo-label`` and ``fiqa score``: one Ray Data pipeline over an image lake (what
they do: :data:`jobs.score.config.ABOUT`, their ``--help``).

Modules: ``config`` (settings, partition), ``listing``, ``planning`` (incremental: skip,
reuse, score), ``stages`` (the pipeline as a list of stages, the pipeline id),
``pipeline`` (the read and decode stages), ``actor`` (the scoring stage), ``steps`` (plan,
execute), ``finish`` (verify, commit), ``commit`` (``_SUCCESS`` and checks of it),
``summary``, ``job`` (the run).
"""

from .commit import MARKER
from .config import ScoreConfig, partition_uri
from .job import get_args_parser, main, run
from .summary import summarise

__all__ = ["MARKER", "ScoreConfig", "get_args_parser", "main", "partition_uri", "run",
           "summarise"]
