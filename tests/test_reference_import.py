"""Checkpoints in the reference code's layouts import and reproduce its forward pass."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from fiqa_core import WeightsMismatchError, create_model


class RefStudent(nn.Module):
    """The reference student: timm model with head removed, GAP, two linears."""

    def __init__(self):
        super().__init__()
        self.feature_extraction = timm.create_model("edgenext_xx_small", pretrained=False)
        self.feature_extraction.head = nn.Identity()
        self.quality = nn.Sequential(nn.Linear(168, 128), nn.Linear(128, 1))

    def forward(self, x):
        f = self.feature_extraction(x)
        return self.quality(torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1))


class RefInnerIQA(nn.Module):
    """The reference teacher's inner IQA model: swin_b, its own quality head the identity."""

    def __init__(self):
        super().__init__()
        self.feature_extraction = torchvision.models.swin_b(weights=None)
        self.feature_extraction.head = nn.Identity()
        self.quality = nn.Identity()

    def forward(self, x):
        return self.quality(self.feature_extraction(x))


class RefTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extraction = RefInnerIQA()
        self.quality = nn.Sequential(nn.Linear(1024, 128), nn.Linear(128, 1))

    def forward(self, x):
        return self.quality(self.feature_extraction(x))


def _randomise(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # make every tensor distinctive, so a mis-mapped key shows
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.02)
    return model.eval()


@pytest.mark.parametrize(
    "preset, ref_cls, prefix",
    [
        ("student-edgenext-xxs", RefStudent, "feature_extraction.stem"),
        ("teacher-swin-b", RefTeacher, "feature_extraction.feature_extraction.features"),
    ],
)
@pytest.mark.parametrize("wrapping", ["raw", "model_state_dict", "ddp"])
def test_reference_checkpoint_imports(tmp_path, preset, ref_cls, prefix, wrapping):
    ref = _randomise(ref_cls())
    state = ref.state_dict()
    assert any(k.startswith(prefix) for k in state) and not any(".head." in k for k in state)
    if wrapping == "model_state_dict":
        state = {"model_state_dict": state}
    elif wrapping == "ddp":
        state = {"model_state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "ref.pth"
    torch.save(state, path)

    model = create_model(preset, image_size=64, weights=str(path))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want = ref(x).squeeze(1)
        got = model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_reference_checkpoint_with_wrong_keys_names_them(tmp_path):
    state = RefStudent().state_dict()
    state["quality.2.weight"] = torch.zeros(1, 1)
    del state["quality.0.bias"]
    torch.save({"model_state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatchError) as e:
        create_model("student-edgenext-xxs", weights=str(tmp_path / "bad.pth"))
    msg = str(e.value)
    assert "missing keys (1): quality.0.bias" in msg
    assert "unexpected keys (1): quality.2.weight" in msg
    assert "bad.pth" in msg


def test_reference_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model_state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a loadable PyTorch state dict"):
        create_model("student-edgenext-xxs", weights=str(tmp_path / "evil.pth"))
