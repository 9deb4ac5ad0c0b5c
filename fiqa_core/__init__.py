"""fiqa_core: face image quality models, preprocessing, metrics and scoring. Never imports Ray.

Names are imported lazily, so a Ray Data CPU stage that needs only ``fiqa_core.images``
(numpy + PIL) does not pay for importing torch and timm in every fresh worker process, and
reading a checkpoint's config (``read_checkpoint_config``) or the presets imports no torch.
"""

import importlib

from . import storage as _storage  # noqa: F401  (object-store retries, set on import)

_EXPORTS = {
    "Calibration": "calibration",
    "fit_logistic": "calibration",
    "CheckpointConfig": "checkpoint_config",
    "load_checkpoint": "checkpoint",
    "read_checkpoint_config": "checkpoint_config",
    "save_checkpoint": "checkpoint",
    "ConfigError": "errors",
    "FiqaError": "errors",
    "InputError": "errors",
    "NotFoundError": "errors",
    "ModelCost": "cost",
    "model_cost": "cost",
    "Decoded": "images",
    "decode_image": "images",
    "normalize_batch": "engines.torch_engine",
    "prepare_image": "images",
    "plcc_loss": "losses",
    "quality_loss": "losses",
    "evaluate": "metrics",
    "Preprocessing": "preprocessing",
    "create_model": "models",
    "Preset": "presets",
    "get_preset": "presets",
    "list_presets": "presets",
    "Scorer": "engines.torch_engine",
    "OnnxScorer": "engines.onnx_engine",
    "export_onnx": "engines.onnx_export",
    "load_scorer": "engines",
    "read_model_config": "engines",
    "register_engine": "engines",
    "list_engines": "engines",
    "WeightsMismatchError": "weights",
    "load_weights": "weights",
    "read_state_dict": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fiqa_core' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
