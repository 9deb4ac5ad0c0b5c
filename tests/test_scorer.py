import numpy as np
import pytest
import torch

from fiqa_core import Calibration, Scorer, create_model, load_checkpoint, save_checkpoint
from fiqa_core.images import prepare_image
from tests import imagegen

SIZE = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("student-edgenext-xxs", image_size=SIZE)
    path = str(tmp_path_factory.mktemp("ckpt") / "student")
    save_checkpoint(model, path, calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    return path


@pytest.fixture(scope="module")
def scorer(checkpoint):
    # fp32: these tests compare against a plain float32 forward pass to 1e-5
    return Scorer.from_checkpoint(checkpoint, device="cpu", batch_size=4, precision="fp32")


def test_batch_equals_one_by_one(scorer, photos):
    files = [imagegen.encode(p, "JPEG", quality=90) for p in photos]
    batch = scorer.score(files)
    single = np.array([scorer.score([f])["raw_score"][0] for f in files])
    assert (batch["status"] == "ok").all()
    # float32 GEMMs block differently with batch size; agreement to 1e-5 absolute
    np.testing.assert_allclose(batch["raw_score"], single, rtol=0, atol=1e-5)
    assert np.ptp(batch["raw_score"]) > 1e-4  # different images, different scores


def test_scores_equal_a_plain_forward_pass(scorer, checkpoint, photos):
    model, _ = load_checkpoint(checkpoint)
    crops = np.stack([prepare_image(p, SIZE).image for p in photos])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model((x - mean) / std).numpy()
    got = scorer.score(list(photos))  # decoded arrays are accepted too
    np.testing.assert_allclose(got["raw_score"], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["score"], Calibration(5.0, 1.0, 0.0, 0.05)(want), atol=1e-6)


def test_a_batch_with_the_whole_zoo_still_scores_the_good_ones(scorer, photos):
    zoo = imagegen.zoo(photos[1])
    names = list(zoo)
    result = scorer.score([zoo[n][0] for n in names])
    assert len(result["status"]) == len(names)
    good_alone = scorer.score([zoo["png"][0]])["raw_score"][0]
    for i, name in enumerate(names):
        expected = zoo[name][1]
        assert result["status"][i] == expected, name
        if expected == "ok":
            assert np.isfinite(result["raw_score"][i]) and result["error"][i] is None
        else:
            assert np.isnan(result["raw_score"][i]) and np.isnan(result["score"][i])
            assert result["error"][i]
    assert result["raw_score"][names.index("png")] == pytest.approx(good_alone, abs=1e-5)


def test_scorer_without_calibration_reports_raw(photos):
    model = create_model("student-edgenext-xxs", image_size=64)
    s = Scorer(model, device="cpu")
    out = s.score([photos[0]])
    assert out["score"][0] == out["raw_score"][0]
    assert s.model_id == "student-edgenext-xxs"


def test_empty_input():
    s = Scorer(create_model("student-edgenext-xxs", image_size=64), device="cpu")
    out = s.score([])
    assert all(len(v) == 0 for v in out.values())


def test_default_forward_batch_is_cache_sized_on_cpu_with_the_same_scores(checkpoint, photos):
    default = Scorer.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    assert default.batch_size == 8  # fastest on the CPU (bench/RESULTS.md)
    wide = Scorer.from_checkpoint(checkpoint, device="cpu", batch_size=64, precision="fp32")
    assert wide.batch_size == 64
    files = [imagegen.encode(p, "JPEG", quality=90) for p in photos] * 4  # > one chunk of 8
    np.testing.assert_allclose(
        default.score(files)["raw_score"], wide.score(files)["raw_score"], rtol=0, atol=1e-5
    )


def test_compiled_scorer_pads_to_one_shape_and_matches_eager(photos):
    torch.manual_seed(0)
    model = create_model("student-edgenext-xxs", image_size=32)
    eager = Scorer(model, device="cpu", batch_size=4, precision="fp32")
    files = [imagegen.encode(p, "JPEG", quality=90) for p in photos] * 2  # 12: chunks 4,4,4
    compiled = Scorer(model, device="cpu", batch_size=5, precision="fp32", compile=True)
    got = compiled.score(files[:11])  # chunks of 5, 5 and 1 (padded to 5)
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0
    np.testing.assert_allclose(got["raw_score"], eager.score(files[:11])["raw_score"],
                               rtol=0, atol=1e-4)
