"""Every setting of a training run; defaults are SPEC.md's recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from fiqa_core.config import setting, settings_where
from fiqa_core.errors import ConfigError
from fiqa_core.faces.templates import NAMES as FACE_TEMPLATES
from fiqa_core.images import DEFAULT_MAX_PIXELS
from fiqa_core.preprocessing import check_image_size
from fiqa_core.presets import get_preset


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Defaults are SPEC.md's recipe."""

    # older versions wrote these (null) into every train_config.yaml; such files still load
    RETIRED_SETTINGS: ClassVar[dict[str, str]] = {
        "fail_at_epoch": "fault injection is a test hook now (jobs.faults); remove the line",
    }
    labels: str = setting(help="labels table, CSV or Parquet: path, score (optional split: "
                          "train/val)", cache=True)
    output: str = setting(help="checkpoint directory to write (local path or URI)")
    preset: str = setting("student-edgenext-xxs", "model preset (fiqa info lists them)")
    pseudo_labels: list[str] = setting(factory=list, help="pseudo-label folders whose ok rows "
                                       "are trained on too", cache=True)
    images_root: str | None = setting(None, "relative label paths are under this; unset: the "
                                      "labels table's folder", cache=True)
    work_dir: str | None = setting(None, "run state and image cache; unset: <output>.work",
                                   operational=True)
    image_size: int | None = setting(None, "input size S (a multiple of 32); unset: the "
                                     "preset's")
    pretrained: bool = setting(True, "start the backbone from ImageNet weights")
    init_weights: str | None = setting(None, "start from these weights instead (checkpoint, "
                                       ".safetensors or .pt)")
    epochs: int = setting(30, "training epochs")
    batch_size: int = setting(32, "global batch, split evenly over the workers")
    lr: float = setting(1e-4, "AdamW learning rate")
    weight_decay: float = setting(1e-6, "AdamW weight decay")
    lr_step_epochs: int = setting(10, "StepLR: epochs between learning-rate drops")
    lr_gamma: float = setting(0.1, "StepLR: factor of each drop")
    seed: int = setting(42, "seed of the split, the shuffles and the initialisation",
                        cache=True)
    val_fraction: float = setting(0.2, "validation share when the table has no split column")
    num_workers: int = setting(1, "Ray Train workers (one per GPU)", operational=True)
    use_gpu: bool | None = setting(None, "train on GPUs; unset: when the cluster has them",
                                   operational=True)
    cpus_per_worker: float = setting(1.0, "CPUs reserved per worker", operational=True)
    amp: bool = setting(True, "bf16 autocast on GPU")
    compile: bool = setting(False, "torch.compile the training model")
    max_aspect: float = setting(3.0, "cached images keep their long side <= max_aspect * S "
                                "(centre)", cache=True)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "images with more pixels are refused",
                              cache=True)
    faces: str = setting("none", "none: each image is a face crop; largest: each image is a "
                         "photo, aligned to face_template before training by its row's "
                         "face_landmarks (pseudo-labels written with faces=) or else by its "
                         "largest face (RetinaFace, the faces extra; a photo without one is "
                         "left out, status no_face)", choices=("none", "largest"),
                         cache=True, omit_default=True)
    face_template: str = setting("model", "with faces: the alignment's template (as fiqa "
                                 "score's; model: FFHQ's geometry at the input size)",
                                 choices=FACE_TEMPLATES, cache=True, omit_default=True)
    min_face: int = setting(16, "with faces: smaller faces (box short side, pixels) are "
                            "ignored", cache=True, omit_default=True)
    face_threshold: float = setting(0.9, "with faces: the detector's face probability a face "
                                    "needs", cache=True, omit_default=True)
    shuffle_buffer: int = setting(256, "rows per worker shuffled locally, on top of shuffled "
                                  "cache files", operational=True)
    max_failures: int = setting(2, "worker-group restarts from the last epoch's checkpoint",
                                operational=True)
    address: str | None = setting(None, "Ray cluster address; unset: RAY_ADDRESS, else a local "
                                  "Ray", operational=True)


# Settings that change how a run executes but not what it computes: a run resumed with a
# different worker count or address is the same run.
OPERATIONAL = settings_where(TrainConfig, "operational")
CACHE_KEYS = settings_where(TrainConfig, "cache")


def work_dir(cfg: TrainConfig) -> str:
    w = cfg.work_dir or f"{cfg.output.rstrip('/')}.work"
    return w if "://" in w else os.path.abspath(w)


def validate(cfg: TrainConfig) -> int:
    """Check settings before any work; returns the image size."""
    preset = get_preset(cfg.preset)
    size = check_image_size(cfg.image_size or preset.image_size)
    if cfg.num_workers < 1 or cfg.batch_size % cfg.num_workers:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be a multiple of num_workers ({cfg.num_workers})"
        )
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.faces != "none":  # the detector's weights (the faces extra), before any work
        from fiqa_core.faces.weights import onnx_bytes

        onnx_bytes()
    return size


def face_settings(cfg: TrainConfig) -> dict | None:
    """What the image cache's face alignment takes (None: the images are face crops)."""
    if cfg.faces == "none":
        return None
    return {"template": cfg.face_template, "threshold": cfg.face_threshold,
            "min_face": cfg.min_face}
