import json

import fsspec
import pytest
import torch

from fiqa_core import (
    Calibration,
    create_model,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)

STUDENT = "student-edgenext-xxs"


def _trained_like_student():
    model = create_model(STUDENT, image_size=96)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_load_round_trips_exactly(tmp_path, where):
    uri = str(tmp_path / "ckpt") if where == "local" else "memory://fiqa-test/ckpt"
    model = _trained_like_student()
    cal = Calibration(4.5, 1.0, 0.2, 0.8)
    saved = save_checkpoint(
        model,
        uri,
        calibration=cal,
        metrics={"srcc": 0.91, "plcc": 0.93},
        lineage={"labels": "labels.csv", "shards": ["a/"], "config_hash": "abc"},
    )
    loaded, config = load_checkpoint(uri)
    assert config == saved
    assert config.id == f"{STUDENT}-{config.weights_sha256[:12]}"
    assert config.calibration == cal
    assert config.preprocessing.size == 96 and loaded.preprocessing.size == 96
    assert config.metrics["srcc"] == 0.91 and config.lineage["shards"] == ["a/"]
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    fs, path = fsspec.core.url_to_fs(uri)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == [
        "config.json",
        "model.safetensors",
    ]
    assert json.loads(fs.cat_file(f"{path}/config.json"))["format"] == "fiqa-checkpoint/1"


def test_same_weights_same_id_and_a_checkpoint_is_usable_as_weights(tmp_path):
    model = _trained_like_student()
    a = save_checkpoint(model, str(tmp_path / "a"))
    b = save_checkpoint(model, str(tmp_path / "b"))
    assert a.id == b.id
    again = create_model(STUDENT, image_size=96, weights=str(tmp_path / "a"))
    assert torch.equal(again.quality[1].weight, model.quality[1].weight)


def test_ddp_or_compiled_wrappers_save_the_plain_model(tmp_path):
    model = _trained_like_student()

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    save_checkpoint(Wrapper(model), str(tmp_path / "c"))
    loaded, _ = load_checkpoint(str(tmp_path / "c"))
    assert torch.equal(loaded.quality[0].bias, model.quality[0].bias)


def test_incomplete_or_corrupt_checkpoints_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        read_checkpoint_config(str(tmp_path / "nothing"))
    save_checkpoint(_trained_like_student(), str(tmp_path / "c"))
    other = create_model(STUDENT, image_size=96)
    from safetensors.torch import save_file

    save_file(other.state_dict(), tmp_path / "c" / "model.safetensors")
    with pytest.raises(ValueError, match="checksum .* does not match config.json"):
        load_checkpoint(str(tmp_path / "c"))
