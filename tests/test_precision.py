"""bf16 where the hardware computes it natively, and scores that rank like fp32's."""

import numpy as np
import pytest
import torch

from fiqa_core import Calibration, Scorer, create_model
from fiqa_core.engines.torch_engine import cpu_has_native_bf16, resolve_precision
from fiqa_core.errors import ConfigError
from fiqa_core.metrics import srcc


def photo_crops(photos, n=96, seed=0):
    """Crops of real photographs at random places and scales: varied content to rank."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        s = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crops.append(np.ascontiguousarray(p[y : y + s, x : x + s]))
    return crops


def test_auto_takes_bf16_only_where_it_is_native(monkeypatch):
    from fiqa_core.engines import torch_engine as scorer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == ("bf16", "auto: a CUDA GPU")
    monkeypatch.setattr(scorer, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(scorer, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == ("fp32", "auto: no native bf16 on cpu")
    assert resolve_precision("bf16", cpu) == ("bf16", "as set")
    assert resolve_precision("fp32", cuda) == ("fp32", "as set")
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", cpu)


def test_native_bf16_detection_agrees_with_pytorchs_probe():
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                          "_is_amx_tile_supported")]
    if not all(probes):
        pytest.skip("this PyTorch has no CPU feature probes")
    assert cpu_has_native_bf16() == any(p() for p in probes)


@pytest.mark.parametrize("size", [64, 352])
def test_bf16_scores_rank_like_fp32_on_real_photographs(photos, size):
    torch.manual_seed(0)
    model = create_model("student-edgenext-xxs", image_size=size)
    crops = photo_crops(photos)
    fp32 = Scorer(model, device="cpu", precision="fp32").score(crops)
    spread = float(np.std(fp32["raw_score"]))
    calibration = Calibration(5.0, 1.0, float(np.mean(fp32["raw_score"])), spread)
    bf16 = Scorer(model, calibration, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    low = bf16.score(crops)
    assert (low["status"] == "ok").all() and np.isfinite(low["raw_score"]).all()
    assert srcc(fp32["raw_score"], low["raw_score"]) >= 0.999
    # on the label scale (1..5, calibrated over this spread) the largest difference is small
    largest = np.abs(calibration(fp32["raw_score"]) - low["score"]).max()
    assert 0 < largest < 0.1, largest


def test_the_scoring_actor_scores_in_the_precision_it_is_given(tmp_path, photos):
    from fiqa_core import read_checkpoint_config, save_checkpoint
    from fiqa_core.images import prepare_image
    from jobs.score.actor import ScoreActor
    from jobs.score.pipeline import stack_pixels
    from tests.helpers import decoded_rows

    torch.manual_seed(0)
    save_checkpoint(create_model("student-edgenext-xxs", image_size=64), str(tmp_path / "m"))
    model_id = read_checkpoint_config(str(tmp_path / "m")).id
    crops = photo_crops(photos, n=8)
    batch = decoded_rows([prepare_image(c, 64) for c in crops])
    rows = {}
    for precision in ("fp32", "bf16"):
        options = {"device": "cpu", "batch_size": 8, "precision": precision}
        actor = ScoreActor("fiqa_core.engines.torch_engine:load", str(tmp_path / "m"), options,
                           model_id, "pl-test", "now")
        assert actor.scorer.precision == precision
        want = actor.scorer.score_prepared(stack_pixels(batch["pixels"], 64),
                                           batch["status"])["raw_score"]
        rows[precision] = actor(dict(batch)).column("raw_score").to_numpy()
        np.testing.assert_array_equal(rows[precision], want)
    assert not np.array_equal(rows["fp32"], rows["bf16"])  # really a different arithmetic
