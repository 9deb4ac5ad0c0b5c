import os
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fiqa_core import WeightsMismatchError, create_model, get_preset, list_presets, model_cost

STUDENT, TEACHER = "student-edgenext-xxs", "teacher-swin-b"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_both_presets_with_their_preprocessing():
    assert list_presets() == [STUDENT, TEACHER]
    assert get_preset(STUDENT).image_size == 352 and get_preset(TEACHER).image_size == 448
    for name in list_presets():
        assert get_preset(name).mean == (0.485, 0.456, 0.406)
        assert get_preset(name).std == (0.229, 0.224, 0.225)
    assert get_preset(STUDENT).selection_metric == "challenge"
    assert get_preset(TEACHER).selection_metric == "srcc"


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'resnet'.*student-edgenext-xxs"):
        create_model("resnet")


def test_bad_image_size_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model(STUDENT, image_size=100)


def test_student_architecture_and_size():
    model = create_model(STUDENT)
    assert n_params(model) == 1_179_641
    assert isinstance(model.feature_extraction.head, nn.Identity)  # no final norm
    assert [type(m) for m in model.quality] == [nn.Linear, nn.Linear]  # no activation
    assert model.quality[0].in_features == 168
    assert model.preprocessing.size == 352
    assert create_model(STUDENT, image_size=288).preprocessing.size == 288


@pytest.mark.parametrize("size, gmacs", [(352, 0.4949), (288, 0.3313)])
def test_student_cost(size, gmacs):
    cost = model_cost(STUDENT, size)
    assert cost.params == 1_179_641
    assert cost.gmacs == pytest.approx(gmacs, rel=0.01)
    assert cost.within_challenge_limit


def test_teacher_architecture_and_size():
    model = create_model(TEACHER)
    assert n_params(model) == pytest.approx(86.9e6, rel=0.002)
    swin = model.feature_extraction.feature_extraction
    assert isinstance(swin, torchvision.models.SwinTransformer)
    assert isinstance(swin.head, nn.Identity)
    assert model.preprocessing.size == 448


@pytest.mark.parametrize("preset", list_presets())
def test_forward_backward_at_small_size(preset):
    model = create_model(preset, image_size=64).train()
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2,)
    y.sum().backward()
    assert model.quality[1].weight.grad is not None


def test_weights_from_local_file_and_uri(tmp_path):
    src = create_model(STUDENT, image_size=64)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save(src.state_dict(), tmp_path / "w.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = src(x)
        for source in (str(tmp_path / "w.safetensors"), f"file://{tmp_path}/w.pt"):
            got = create_model(STUDENT, image_size=64, weights=source)(x)
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_weights_for_the_wrong_preset_say_which_keys(tmp_path):
    torch.save(create_model(STUDENT).state_dict(), tmp_path / "student.pt")
    with pytest.raises(WeightsMismatchError, match="missing keys.*unexpected keys.*another preset"):
        create_model(TEACHER, weights=str(tmp_path / "student.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_model(STUDENT, weights=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.pt: not a loadable PyTorch state dict"):
        create_model(STUDENT, weights=str(tmp_path / "junk.pt"))


def test_pretrained_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(RuntimeError, match="could not load the ImageNet weights of edgenext"):
        create_model(STUDENT, pretrained=True)


def _hf_cache_with(tmp_path, repo: str, state: dict) -> str:
    """Lay out a Hugging Face hub cache holding ``model.safetensors`` for ``repo``."""
    hub = tmp_path / "hf" / "hub"
    root = hub / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    save_file(state, snap / "model.safetensors")
    return str(tmp_path / "hf")


def test_pretrained_student_loads_imagenet_weights_from_the_hub_cache(tmp_path):
    imagenet = timm.create_model("edgenext_xx_small")  # stands in for the published weights
    with torch.no_grad():
        for p in imagenet.parameters():
            p.add_(0.5)
    hf_home = _hf_cache_with(tmp_path, "timm/edgenext_xx_small.in1k", imagenet.state_dict())
    save_file(imagenet.state_dict(), tmp_path / "expected.safetensors")
    # huggingface_hub reads HF_HOME once, at import: a fresh interpreter, as a user would have
    script = f"""
import torch
from safetensors.torch import load_file
from fiqa_core import create_model
want = load_file({str(tmp_path / "expected.safetensors")!r})
got = create_model("{STUDENT}", pretrained=True).feature_extraction.state_dict()
assert set(got) == {{k for k in want if not k.startswith("head.")}}
assert all(torch.equal(got[k], want[k]) for k in got)
print("loaded", len(got))
"""
    env = {**os.environ, "HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("loaded")


def test_pretrained_teacher_loads_imagenet_weights_from_the_torch_cache(tmp_path, monkeypatch):
    imagenet = torchvision.models.swin_b()
    with torch.no_grad():
        imagenet.features[0][0].weight.fill_(0.25)
    url = torchvision.models.Swin_B_Weights.IMAGENET1K_V1.url
    ckpt_dir = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save(imagenet.state_dict(), ckpt_dir / os.path.basename(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = create_model(TEACHER, pretrained=True)
    swin = model.feature_extraction.feature_extraction
    assert torch.all(swin.features[0][0].weight == 0.25)
