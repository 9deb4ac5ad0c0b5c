"""Scoring engines: what runs a model on prepared images.

Each engine is one module here (``torch_engine``: PyTorch on a checkpoint directory;
``onnx_engine``: ONNX Runtime on a ``fiqa export`` file, exported by ``onnx_export``) and
one :class:`Engine` entry in :mod:`~fiqa_core.engines.registry`, which says as data what it
recognises, needs and accepts. Adding an engine is one module and one
:func:`register_engine` call. A run's driver calls :func:`preflight` once; a library user
calls :func:`load_scorer`. Importing this package imports no torch.
"""

from .base import ScorerBase
from .preflight import Decisions, check_run, load_scorer, preflight
from .registry import (
    CHECKPOINT,
    Engine,
    check_settings,
    get_engine,
    list_engines,
    model_kind,
    read_model_config,
    register_engine,
    resolve_engine,
    unregister_engine,
)

__all__ = [
    "CHECKPOINT", "Decisions", "Engine", "ScorerBase", "check_run", "check_settings",
    "get_engine", "list_engines", "load_scorer", "model_kind", "preflight",
    "read_model_config", "register_engine", "resolve_engine", "unregister_engine",
]
