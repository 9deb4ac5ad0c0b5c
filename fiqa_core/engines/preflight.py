"""One engine decision per run, made by the driver: which engine, on which device, in which
precision, whether JPEGs are decoded on the device, and the model converted once if the
engine needs its own format. Imports no torch (converting a checkpoint does)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..checkpoint_config import CheckpointConfig
from ..extras import named, require
from .registry import Engine, check_settings, read_model_config, resolve_engine


def check_run(cfg) -> Engine:
    """The engine of a run's settings (``engine``, ``model``, ``precision``, ``compile``,
    ``device_decode``), its settings checked and its extras present: a clear error before
    any work."""
    engine = resolve_engine(cfg.engine, cfg.model)
    check_settings(engine, cfg.precision, cfg.compile, cfg.device_decode)
    for module in engine.needs + (engine.convert_needs if engine.converts(cfg.model) else ()):
        require(module)
    return engine


@dataclass(frozen=True)
class Decisions:
    """What a run does with its model: every stage reads these, none decides again.

    Attributes:
        engine: The registered engine.
        model: The model as given (path or URI).
        config: Its id, preprocessing and calibration.
        use_gpu: Score on GPUs.
        device: ``cuda`` or ``cpu``, for every scoring actor.
        precision: As set (``auto`` is resolved by each actor on its hardware).
        defer_decode: JPEGs the engine decodes on its device reach it as bytes alone.
        threads: Threads of each scoring actor on CPUs.
        converted: The model in the engine's own format when it was given a checkpoint
            directory (converted once, here), else None: each actor loads ``model``.
        notes: Warnings for the run's log.
    """

    engine: Engine
    model: str
    config: CheckpointConfig
    use_gpu: bool
    device: str
    precision: str
    defer_decode: bool
    threads: int
    converted: bytes | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()

    def load_options(self, batch_size: int | None, max_pixels: int, compile: bool) -> dict:
        """Keyword arguments of the engine's ``load`` in every scoring actor."""
        return {"device": self.device, "batch_size": batch_size, "max_pixels": max_pixels,
                "threads": self.threads, "source": self.model, "precision": self.precision,
                "compile": compile}


def preflight(cfg, resources: Mapping[str, float], config: CheckpointConfig | None = None
              ) -> Decisions:
    """The run's engine decisions for a cluster with ``resources`` (Ray's
    ``cluster_resources()``: ``GPU`` counts GPUs). ``config``: the model's, if read already.

    Refuses what cannot run with the engine's own message: settings it does not take,
    missing extras, ``use_gpu=true`` where it cannot use a GPU.
    """
    engine = check_run(cfg)
    config = config or read_model_config(cfg.model)
    notes = []
    use_gpu = resources.get("GPU", 0) > 0 if cfg.use_gpu is None else bool(cfg.use_gpu)
    if use_gpu and engine.gpu and not named(engine.gpu)():
        if cfg.use_gpu:
            from ..errors import ConfigError

            raise ConfigError(engine.no_gpu)
        notes.append(engine.no_gpu_warning or f"the cluster has GPUs but the {engine.name} "
                     "engine cannot use them here: it scores on CPUs")
        use_gpu = False
    wants = use_gpu if cfg.device_decode is None else bool(cfg.device_decode)
    converted = named(engine.convert)(cfg.model)[0] if engine.converts(cfg.model) else None
    return Decisions(
        engine=engine, model=cfg.model, config=config, use_gpu=use_gpu,
        device="cuda" if use_gpu else "cpu", precision=cfg.precision,
        defer_decode=engine.decodes_on_device and wants and not cfg.draft,
        threads=cfg.scorer_threads or max(1, math.ceil(cfg.scorer_cpus)),
        converted=converted, notes=tuple(notes),
    )


def load_scorer(model: str, engine: str | None = None, **options):
    """A scorer for ``model`` on ``engine`` (unset: the engine whose files ``model`` is,
    else torch). ``options`` go to the engine's ``load`` (``device``, ``batch_size``,
    ``max_pixels``, ``threads``, and ``precision`` / ``compile`` where it takes them;
    ``threads`` on the torch engine sets this process's torch threads). An engine with its
    own format given a checkpoint directory converts it in memory first."""
    chosen = resolve_engine(engine, model)
    check_settings(chosen, options.get("precision", "auto"), options.get("compile", False))
    if chosen.converts(model):
        for module in chosen.convert_needs:
            require(module)
        data = named(chosen.convert)(model)[0]
        return named(chosen.load)(data, source=model, **options)
    return named(chosen.load)(model, **options)
