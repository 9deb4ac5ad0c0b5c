"""Engines as registered components: the registry's rules, one preflight per run, and a new
engine (tests/fake_engine.py, registered only here) running ``fiqa pseudo-label`` end to
end."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from fiqa_core import Calibration, create_model, read_checkpoint_config, save_checkpoint
from fiqa_core.engines import list_engines, preflight, resolve_engine
from fiqa_core.engines.registry import check_settings, get_engine
from fiqa_core.errors import ConfigError
from jobs import cli
from tests import fake_engine, imagegen
from tests.test_score import cfg, image_files, make_lake, read_partition

SIZE = 64


@pytest.fixture
def fake():
    engine = fake_engine.register()
    try:
        yield engine
    finally:
        fake_engine.unregister()
    assert "fake" not in list_engines()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "student")
    save_checkpoint(create_model("student-edgenext-xxs", image_size=SIZE), path,
                    calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    return path


def test_the_registry_resolves_each_model_to_its_engine():
    assert list_engines()[:2] == ["torch", "onnx"]
    assert resolve_engine(None, "s3://m/student.ONNX").name == "onnx"
    assert resolve_engine(None, "s3://m/student/").name == "torch"  # a checkpoint directory
    assert resolve_engine("onnx", "s3://m/student/").converts("s3://m/student/")
    with pytest.raises(ConfigError, match=r"m.onnx is an ONNX file, which the onnx engine "
                       r"runs: set engine=onnx"):
        resolve_engine("torch", "m.onnx")
    with pytest.raises(ConfigError, match="engine must be one of torch, onnx, got 'trt'"):
        resolve_engine("trt", "m/")
    with pytest.raises(ConfigError, match=r"compile: torch engine setting\(s\); the onnx "
                       r"engine runs the exported file in fp32.*use engine=torch"):
        check_settings(get_engine("onnx"), compile=True)
    check_settings(get_engine("onnx"), precision="fp32")  # fp32 is what it runs


def test_preflight_decides_once_for_the_cluster(checkpoint, monkeypatch):
    from fiqa_core.engines import onnx_engine

    c = cfg(input="unused/", model=checkpoint, output="unused")
    cpu = preflight(c, {"CPU": 4})
    assert (cpu.engine.name, cpu.device, cpu.use_gpu, cpu.defer_decode) == (
        "torch", "cpu", False, False)
    assert cpu.config.id == read_checkpoint_config(checkpoint).id and cpu.converted is None
    assert cpu.load_options(None, 10, False)["threads"] == 1  # its reserved CPU
    gpu = preflight(c, {"CPU": 4, "GPU": 2})
    assert (gpu.device, gpu.defer_decode) == ("cuda", True)  # JPEGs decoded on the GPU
    assert not preflight(replace(c, draft=True), {"GPU": 2}).defer_decode
    assert preflight(replace(c, device_decode=True), {"CPU": 4}).defer_decode
    # the onnx engine on a GPU cluster whose onnxruntime has no CUDA provider
    monkeypatch.setattr(onnx_engine, "cuda_available", lambda: False)
    onnx = replace(c, engine="onnx")
    on_cpus = preflight(onnx, {"GPU": 2})
    assert (on_cpus.device, on_cpus.defer_decode) == ("cpu", False)
    assert "no CUDA provider: the onnx engine scores on CPUs" in on_cpus.notes[0]
    from fiqa_core import OnnxScorer

    assert OnnxScorer(on_cpus.converted).model_id == cpu.config.id  # exported, here, once
    with pytest.raises(ConfigError, match="use_gpu=true with the onnx engine needs"):
        preflight(replace(onnx, use_gpu=True), {"GPU": 2})


def test_a_new_engine_runs_pseudo_label_end_to_end(fake, checkpoint, tmp_path, monkeypatch,
                                                   ray_local):
    """One module and one registry entry: ``fiqa pseudo-label`` runs it on its own file and,
    converted once by the driver, on a checkpoint directory."""
    from fiqa_core.images import prepare_image

    conversions = tmp_path / "conversions.log"
    monkeypatch.setenv("FIQA_FAKE_CONVERSIONS", str(conversions))
    lake = tmp_path / "lake"
    zoo = make_lake(lake, n_jpeg=12, n_png=4)
    model_id = read_checkpoint_config(checkpoint).id
    own = tmp_path / "m.fake"
    own.write_text(json.dumps({"model_id": "fake-own", "size": 32, "weight": 0.5}))
    for model, out, want_id in ((own, tmp_path / "own", "fake-own"),
                                (checkpoint, tmp_path / "converted", model_id)):
        extra = [] if str(model).endswith(".fake") else ["engine=fake"]
        code = cli.main(["pseudo-label", f"input={lake}", f"model={model}", f"output={out}",
                         "buckets=4", "scorers=2", *extra])
        assert code == 0
        rows = read_partition(str(out)).set_index("path").sort_index()
        assert list(rows.index) == image_files(lake)  # every image once
        assert set(rows["model"]) == {want_id} and rows["pipeline"].nunique() == 1
        for path, status in zoo.items():
            assert rows.at[path, "status"] == status
        ok = rows[rows["status"] == "ok"]
        size = 32 if model == own else SIZE
        weight = 0.5 if model == own else 0.01
        sample = ok.index[:5]
        want = [weight * prepare_image(open(p, "rb").read(), size).image.mean() for p in sample]
        np.testing.assert_allclose(ok.loc[sample, "raw_score"], want, rtol=1e-9)
        np.testing.assert_array_equal(ok["score"], ok["raw_score"])  # no calibration
        marker = json.loads((out / "_SUCCESS").read_text())
        assert marker["engine"] == "fake" and marker["rows"] == len(rows)
    # the checkpoint was converted once, by the driver, not in each of the two actors
    assert conversions.read_text().split() == [str(os.getpid())]


def test_a_fake_model_file_with_a_torch_setting_is_refused_before_any_work(fake, tmp_path,
                                                                          capsys):
    own = tmp_path / "m.fake"
    own.write_text(json.dumps({"model_id": "fake-own", "size": 32, "weight": 0.5}))
    imagegen.write_labeled_set(tmp_path / "lake", 2, seed=1, size=(40, 48))
    code = cli.main(["pseudo-label", f"input={tmp_path / 'lake'}", f"model={own}",
                     f"output={tmp_path / 'out'}", "compile=true"])
    assert code == 2 and not (tmp_path / "out").exists()
    assert ("compile: torch engine setting(s); the fake engine scores mean pixel values in "
            "fp32. Leave them unset, or use engine=torch") in capsys.readouterr().out
    # the engine's name is a setting's choice while it is registered, and only then
    from fiqa_core.config import resolve_config
    from jobs.score import ScoreConfig

    assert resolve_config(ScoreConfig, None, ["input=i/", "model=m", "output=o",
                                              "engine=fake"]).engine == "fake"
    fake_engine.unregister()
    with pytest.raises(ConfigError, match="engine must be one of torch, onnx, got 'fake'"):
        resolve_config(ScoreConfig, None, ["input=i/", "model=m", "output=o", "engine=fake"])
