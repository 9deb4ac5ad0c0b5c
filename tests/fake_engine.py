"""A tiny engine that exists only inside the tests: one module (this one) and one registry
entry (:func:`register`), as a new engine would be added.

Its own model format is a JSON file ending in ``.fake`` (the model's id, its input size and
a weight); it converts a fiqa checkpoint directory into that format (once per run, in the
driver: each conversion is logged to ``$FIQA_FAKE_CONVERSIONS``). Its score of an image is
the weight times the image's mean pixel value.
"""

from __future__ import annotations

import json
import os

import numpy as np

from fiqa_core import storage
from fiqa_core.checkpoint_config import CheckpointConfig, read_checkpoint_config
from fiqa_core.engines import Engine, ScorerBase, register_engine, unregister_engine
from fiqa_core.images import DEFAULT_MAX_PIXELS
from fiqa_core.preprocessing import Preprocessing

NAME = "fake"


def _config(meta: dict) -> CheckpointConfig:
    return CheckpointConfig(id=meta["model_id"], preset="fake", calibration=None,
                            preprocessing=Preprocessing(int(meta["size"])))


def read_config(model: str) -> CheckpointConfig:
    return _config(json.loads(storage.read_bytes(model)))


def convert(checkpoint: str) -> tuple[bytes, dict]:
    config = read_checkpoint_config(checkpoint)
    meta = {"model_id": config.id, "size": config.preprocessing.size, "weight": 0.01}
    log = os.environ.get("FIQA_FAKE_CONVERSIONS")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    return json.dumps(meta).encode(), meta


class FakeScorer(ScorerBase):
    engine = NAME

    def __init__(self, meta: dict, device: str, batch_size: int | None, max_pixels: int,
                 given: str):
        config = _config(meta)
        self.preprocessing, self.calibration = config.preprocessing, None
        self.model_id, self.weight = config.id, float(meta["weight"])
        self.batch_size, self.max_pixels = batch_size or 4, max_pixels
        self.precision, self.precision_reason, self.device = "fp32", "its only one", device
        self.compiled, self.compile_seconds, self.given = False, None, given

    def score_pixels(self, pixels) -> np.ndarray:
        return self.weight * np.asarray(pixels, dtype=np.float64).mean(axis=(1, 2, 3))


def load(model: str | bytes, device: str | None = None, batch_size: int | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None,
         source: str | None = None, precision: str = "auto", compile: bool = False
         ) -> FakeScorer:
    given = "bytes" if isinstance(model, bytes) else "file"
    data = model if isinstance(model, bytes) else storage.read_bytes(model)
    print(f"fiqa-fake: loaded from {given}", flush=True)
    return FakeScorer(json.loads(data), device or "cpu", batch_size, max_pixels, given)


def register() -> Engine:
    return register_engine(Engine(
        NAME, load="tests.fake_engine:load", files=(".fake",), file_kind="a fake model file",
        read_config="tests.fake_engine:read_config", convert="tests.fake_engine:convert",
        about_settings="the fake engine scores mean pixel values in fp32",
        description="the tests' own engine",
    ))


def unregister() -> None:
    unregister_engine(NAME)
