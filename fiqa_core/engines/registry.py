"""The engines that run a model, as data: what each recognises, needs and accepts.

An engine is one module with a ``load`` function (model -> a
:class:`~fiqa_core.engines.base.ScorerBase`) and one :class:`Engine` entry here. Its code
is named (``module:attribute``) and imported only when used, so choosing an engine and
checking a run's settings import no torch and no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..extras import named
from ..preprocessing import PRECISIONS

CHECKPOINT = "checkpoint"  # a fiqa checkpoint directory (config.json + weights)
READ_CHECKPOINT = "fiqa_core.checkpoint_config:read_checkpoint_config"


@dataclass(frozen=True)
class Engine:
    """A registered scoring engine.

    Attributes:
        name: What ``engine=`` names, e.g. ``onnx``.
        load: ``module:callable(model, **options)`` -> a scorer; ``model`` is a path or URI,
            or the bytes :attr:`convert` made. Options (every one has a default):
            ``device``, ``batch_size``, ``max_pixels``, ``threads``, ``source`` (what to
            call bytes in messages), ``precision`` and ``compile`` (checked against
            :attr:`precisions` and :attr:`compiles` before it is called).
        files: The model files of its own format, by suffix (``.onnx``); it runs them by
            default. Empty: it runs fiqa checkpoint directories as they are.
        file_kind: What such a file is called in messages (``an ONNX file``).
        read_config: ``module:callable(model)`` -> the model's id, preprocessing and
            calibration, read from a file of its own format without loading it.
        convert: ``module:callable(checkpoint)`` -> ``(bytes, metadata)`` of its own
            format, for a checkpoint directory; done once per run, by the driver.
        needs: Modules it needs to run (named in :mod:`fiqa_core.extras`).
        convert_needs: Modules :attr:`convert` needs as well.
        precisions: The ``precision`` values it takes.
        compiles: Whether it takes ``compile=true``.
        decodes_on_device: Whether it decodes JPEGs in batches on its device
            (``device_decode``), where rows reach it as their bytes alone.
        gpu: ``module:callable()`` -> whether it can use a GPU here; None: whenever the
            cluster has one.
        no_gpu: The refusal of ``use_gpu=true`` when :attr:`gpu` says no.
        no_gpu_warning: The warning when it scores on CPUs for that reason.
        about_settings: Why it refuses settings it does not take, in its own words.
        description: One line for ``fiqa info``.
    """

    name: str
    load: str
    files: tuple[str, ...] = ()
    file_kind: str = ""
    read_config: str = READ_CHECKPOINT
    convert: str | None = None
    needs: tuple[str, ...] = ()
    convert_needs: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("auto", "fp32")
    compiles: bool = False
    decodes_on_device: bool = False
    gpu: str | None = None
    no_gpu: str = ""
    no_gpu_warning: str = ""
    about_settings: str = ""
    description: str = ""

    def recognises(self, model: str) -> bool:
        """Whether ``model`` is a file of this engine's own format."""
        name = str(model).lower().rstrip("/")
        return any(name.endswith(suffix) for suffix in self.files)

    def runs(self, model: str) -> bool:
        """Whether it can run ``model``: its own files, or any checkpoint directory (as it
        is, or through :attr:`convert`)."""
        return self.recognises(model) if model_kind(model) != CHECKPOINT else (
            not self.files or self.convert is not None)

    def converts(self, model: str) -> bool:
        """Whether running ``model`` needs :attr:`convert` first."""
        return model_kind(model) == CHECKPOINT and bool(self.files)

    def unaccepted(self, precision: str = "auto", compile: bool = False,
                   device_decode: bool | None = None) -> list[str]:
        """The settings given that this engine does not take."""
        given = {"precision": precision not in self.precisions,
                 "compile": bool(compile) and not self.compiles,
                 "device_decode": bool(device_decode) and not self.decodes_on_device}
        return [k for k, v in given.items() if v]


_ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> Engine:
    if engine.name in _ENGINES:
        raise ValueError(f"engine {engine.name!r} is already registered")
    _ENGINES[engine.name] = engine
    return engine


def unregister_engine(name: str) -> None:
    """Remove an engine (a test's own, registered only inside it)."""
    _ENGINES.pop(name, None)


def list_engines() -> list[str]:
    return list(_ENGINES)


def get_engine(name: str) -> Engine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise ConfigError(
            f"engine must be one of {', '.join(_ENGINES)}, got {name!r}"
        ) from None


def model_kind(model: str) -> str:
    """The suffix of a registered engine's own file format that ``model`` ends with, else
    :data:`CHECKPOINT`."""
    owner = next((e for e in _ENGINES.values() if e.recognises(model)), None)
    if owner is None:
        return CHECKPOINT
    name = str(model).lower().rstrip("/")
    return next(s for s in owner.files if name.endswith(s))


def resolve_engine(name: str | None, model: str) -> Engine:
    """The engine that runs ``model``: as named, else the one whose files it is, else the
    first that runs checkpoint directories as they are."""
    if name is None:
        owner = next((e for e in _ENGINES.values() if e.recognises(model)), None)
        return owner or next(e for e in _ENGINES.values() if not e.files)
    engine = get_engine(name)
    if not engine.runs(model):
        owner = next((e for e in _ENGINES.values() if e.recognises(model)), None)
        what = (f"{owner.file_kind or 'a ' + model_kind(model) + ' file'}, which the "
                f"{owner.name} engine runs: set engine={owner.name} (or leave it unset), or "
                "point model= at the checkpoint directory it was exported from"
                if owner else f"a checkpoint directory, which the {name} engine does not run")
        raise ConfigError(f"{model} is {what}")
    return engine


def check_settings(engine: Engine, precision: str = "auto", compile: bool = False,
                   device_decode: bool | None = None) -> None:
    """Refuse settings ``engine`` does not take, naming the engines that take them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    refused = engine.unaccepted(precision, compile, device_decode)
    if not refused:
        return
    takers = [e.name for e in _ENGINES.values()
              if not e.unaccepted(precision, compile, device_decode)] or ["another"]
    raise ConfigError(
        f"{', '.join(refused)}: {' or '.join(takers)} engine setting(s); "
        f"{engine.about_settings or f'the {engine.name} engine does not take them'}. Leave "
        f"them unset, or use engine={takers[0]}"
    )


def read_model_config(model: str):
    """What a driver needs of a model (id, preprocessing, calibration) without loading it:
    a checkpoint's ``config.json``, or what an engine's own file carries."""
    owner = next((e for e in _ENGINES.values() if e.recognises(model)), None)
    return named(owner.read_config if owner else READ_CHECKPOINT)(model)


# name, its code, the files it runs, what it needs and accepts, in that order
register_engine(Engine(
    "torch", load="fiqa_core.engines.torch_engine:load",
    precisions=PRECISIONS, compiles=True, decodes_on_device=True,
    description="PyTorch: bf16 where native, torch.compile, JPEGs decoded on the device",
))
register_engine(Engine(
    "onnx", load="fiqa_core.engines.onnx_engine:load", files=(".onnx",),
    file_kind="an ONNX file", read_config="fiqa_core.engines.onnx_engine:read_onnx_config",
    convert="fiqa_core.engines.onnx_export:export_bytes",
    needs=("onnxruntime",), convert_needs=("onnxscript",),
    gpu="fiqa_core.engines.onnx_engine:cuda_available",
    no_gpu="use_gpu=true with the onnx engine needs onnxruntime's CUDA provider, which this "
           "onnxruntime lacks: install onnxruntime-gpu on the cluster's image, or set "
           "use_gpu=false",
    no_gpu_warning="the cluster has GPUs but this onnxruntime has no CUDA provider: the onnx "
                   "engine scores on CPUs (install onnxruntime-gpu to use them)",
    about_settings="the onnx engine runs the exported file in fp32 on pixels the CPU prepares",
    description="ONNX Runtime in fp32, no torch (a checkpoint directory is exported once "
                "per run)",
))
