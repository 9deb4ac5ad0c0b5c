"""Optional dependencies: each belongs to an install extra, and its absence is a clear error."""

from __future__ import annotations

import importlib.util
from importlib import metadata

from .errors import FiqaError

# module -> (extra, what needs it)
EXTRAS = {
    "fvcore": ("cost", "counting a model's GMACs (fiqa evaluate, info cost=true, the round)"),
    "matplotlib": ("report", "plotting the round report"),
    "onnxscript": ("onnx", "exporting a model to ONNX (fiqa export)"),
    "onnxruntime": ("onnx", "running ONNX models (fiqa export's check, engine=onnx)"),
    "skimage": ("demo", "making the demo data from bundled photographs (fiqa demo)"),
}


class MissingExtra(FiqaError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str) -> None:
    """Raise :class:`MissingExtra` naming the install command when ``module`` is absent."""
    if importlib.util.find_spec(module) is None:
        if module not in EXTRAS:  # a plugin's own dependency (an engine registered outside)
            raise MissingExtra(f"{module} is needed here and is not installed: "
                               f"pip install {module}")
        extra, purpose = EXTRAS[module]
        raise MissingExtra(
            f"{purpose} needs {module}, which the '{extra}' extra installs: "
            f"pip install 'fiqa[{extra}]'"
        )


def installed_version(package: str) -> str | None:
    """The installed version of distribution ``package``, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def named(ref: str):
    """The object a ``module:attribute`` name refers to, its module imported now: how
    presets, engines and the round's stages name code they import only when used."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
