"""fiqa_core: face image quality models, preprocessing, metrics and scoring. Never imports Ray."""

from .calibration import Calibration, fit_logistic
from .checkpoint import (
    CheckpointConfig,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from .cost import ModelCost, model_cost
from .images import Decoded, decode_image, normalize_batch, prepare_image
from .losses import plcc_loss, quality_loss
from .metrics import evaluate
from .models import Preprocessing, create_model
from .presets import Preset, get_preset, list_presets
from .scorer import Scorer
from .weights import WeightsMismatchError, load_weights, read_state_dict

__all__ = [
    "Calibration",
    "CheckpointConfig",
    "Decoded",
    "ModelCost",
    "Preprocessing",
    "Preset",
    "Scorer",
    "WeightsMismatchError",
    "create_model",
    "decode_image",
    "evaluate",
    "fit_logistic",
    "get_preset",
    "list_presets",
    "load_checkpoint",
    "load_weights",
    "model_cost",
    "normalize_batch",
    "plcc_loss",
    "prepare_image",
    "quality_loss",
    "read_checkpoint_config",
    "read_state_dict",
    "save_checkpoint",
]
