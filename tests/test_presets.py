"""What holds for every registered preset, so a new preset is covered for free."""

import numpy as np
import pytest
import torch

from fiqa_core import (
    Calibration,
    Scorer,
    create_model,
    get_preset,
    list_presets,
    load_checkpoint,
    model_cost,
    read_checkpoint_config,
    save_checkpoint,
)
from fiqa_core.images import prepare_image

SIZE = 64  # small enough for Swin-B on a CPU; a multiple of 32 as every preset needs


@pytest.fixture(scope="module", params=list_presets())
def saved(request, tmp_path_factory):
    """A checkpoint of each preset with perturbed weights, and the model that wrote it."""
    torch.manual_seed(0)
    model = create_model(request.param, image_size=SIZE)
    with torch.no_grad():
        for p in model.quality.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = str(tmp_path_factory.mktemp(request.param) / "ckpt")
    config = save_checkpoint(model, path, calibration=Calibration(5.0, 1.0, 0.0, 0.5),
                             lineage={"labels": "labels.csv"})
    return request.param, model, path, config


def test_preset_carries_its_preprocessing(saved):
    name, model, _, _ = saved
    preset = get_preset(name)
    assert model.preset == name
    assert model.preprocessing == preset.preprocessing(SIZE)
    assert model.preprocessing.mean == preset.mean and model.preprocessing.std == preset.std
    assert preset.role in ("teacher", "student")
    assert preset.selection_metric in ("srcc", "challenge")


def test_checkpoint_round_trips_exactly(saved):
    name, model, path, config = saved
    assert read_checkpoint_config(path) == config
    assert config.id == f"{name}-{config.weights_sha256[:12]}"
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config and loaded.preprocessing.size == SIZE
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_scorer_equals_a_plain_forward_pass(saved, photos):
    _, model, path, _ = saved
    scorer = Scorer.from_checkpoint(path, device="cpu", batch_size=2, precision="fp32")
    crops = np.stack([prepare_image(p, SIZE).image for p in photos])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model((x - mean) / std).numpy()
    got = scorer.score(list(photos) + [b"not an image"])
    np.testing.assert_allclose(got["raw_score"][:-1], want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["score"][:-1], Calibration(5.0, 1.0, 0.0, 0.5)(want),
                               atol=1e-5)
    assert list(got["status"]) == ["ok"] * len(photos) + ["not_image"]
    assert np.isnan(got["raw_score"][-1]) and np.isnan(got["score"][-1])


def test_cost_counts_every_parameter(saved):
    name, model, _, _ = saved
    cost = model_cost(name, SIZE)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.image_size == SIZE and cost.gmacs > 0
    # MACs grow with the pixel count: 4x the pixels, at least 3x the MACs
    assert model_cost(name, 2 * SIZE).gmacs > 3 * cost.gmacs
