"""fiqa export (ONNX) and the onnx scoring engine: parity with PyTorch, the file's contract,
scoring without torch, bad input, and the scoring job on the onnx engine."""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from fiqa_core import (
    Calibration,
    OnnxScorer,
    Scorer,
    create_model,
    export_onnx,
    load_scorer,
    read_checkpoint_config,
    read_model_config,
    save_checkpoint,
    storage,
)
from fiqa_core.config import resolve_config
from fiqa_core.errors import ConfigError, InputError, NotFoundError
from jobs import cli
from tests import imagegen

SIZE = 96
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAL = Calibration(5.0, 1.0, 0.2, 0.4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("student-edgenext-xxs", image_size=SIZE)
    with torch.no_grad():  # raw scores spread over ~1, so 1e-4 is a real bar
        model.quality[1].weight.mul_(30)
    path = str(tmp_path_factory.mktemp("ckpt") / "student")
    save_checkpoint(model, path, calibration=CAL)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("onnx") / "student.onnx")
    assert cli.main(["export", f"model={checkpoint}", f"output={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def torch_scorer(checkpoint):
    return Scorer.from_checkpoint(checkpoint, device="cpu", precision="fp32")


def test_the_file_and_its_sidecar_say_how_to_use_it(checkpoint, exported):
    config = read_checkpoint_config(checkpoint)
    data = open(exported, "rb").read()
    sidecar = json.loads(open(exported + ".json").read())
    assert sidecar["onnx_sha256"] == hashlib.sha256(data).hexdigest()
    assert sidecar["onnx_bytes"] == len(data)
    assert sidecar["model_id"] == config.id and sidecar["weights_sha256"] == config.weights_sha256
    assert sidecar["preset"] == "student-edgenext-xxs" and sidecar["opset"] == 18
    assert sidecar["input"] == {"name": "pixels", "dtype": "uint8", "layout": "NHWC",
                                "channels": "RGB", "shape": ["batch", SIZE, SIZE, 3]}
    pre = sidecar["preprocessing"]
    assert pre["size"] == SIZE and pre["mean"] == [0.485, 0.456, 0.406]
    assert "short side" in pre["resize"] and "bilinear" in pre["resize"]
    assert "centre" in pre["resize"]
    assert {k: sidecar["calibration"][k] for k in "b1 b2 b3 b4".split()} == CAL.to_dict()
    assert sidecar["check"]["max_abs_raw_diff"] <= 1e-4
    # the same facts inside the file, for a consumer that has only the file
    session = ort.InferenceSession(exported)
    inside = json.loads(session.get_modelmeta().custom_metadata_map["fiqa"])
    assert inside == {k: v for k, v in sidecar.items() if not k.startswith("onnx_")}
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("pixels", "tensor(uint8)", [SIZE, SIZE, 3])
    assert isinstance(inp.shape[0], str)  # a dynamic batch
    assert [o.name for o in session.get_outputs()] == ["raw_score", "score"]
    # the driver's view: the checkpoint's facts, from the sidecar, or from the file alone
    alone = os.path.join(os.path.dirname(exported), "alone.onnx")
    with open(alone, "wb") as f:
        f.write(data)
    for path in (exported, alone):
        seen = read_model_config(path)
        assert (seen.id, seen.preprocessing, seen.calibration) == (
            config.id, config.preprocessing, config.calibration)


def test_onnx_runtime_matches_torch_on_real_photographs(exported, torch_scorer, photos):
    files = [imagegen.encode(p, "JPEG", quality=90) for p in photos] + list(photos)
    want = torch_scorer.score(files)
    got = OnnxScorer(exported).score(files)
    assert list(got["status"]) == list(want["status"]) == ["ok"] * len(files)
    assert np.ptp(want["raw_score"]) > 0.2  # different images, different scores
    assert np.max(np.abs(got["raw_score"] - want["raw_score"])) <= 1e-4
    # the graph's calibration is the torch path's calibration applied
    np.testing.assert_allclose(got["score"], CAL(got["raw_score"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=1e-4)


def test_batch_sizes_1_and_17_give_the_same_scores(exported, photos):
    rng = np.random.default_rng(0)
    scorer = OnnxScorer(exported)
    crops = [scorer.prepare(p).image for p in photos]
    pixels = np.stack([crops[i % len(crops)] for i in range(17)])
    pixels[len(crops):] = np.clip(  # 17 distinct images: noisy variants of the photos
        pixels[len(crops):] + rng.integers(-20, 21, pixels[len(crops):].shape), 0, 255)
    one = OnnxScorer(exported, batch_size=1).raw_and_score(pixels)
    many = OnnxScorer(exported, batch_size=17).raw_and_score(pixels)
    for a, b in zip(one, many, strict=True):
        assert a.shape == (17,)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert len(np.unique(np.round(one[0], 4))) == 17


def test_statuses_and_rows_equal_the_torch_engine(exported, torch_scorer, photos):
    zoo = imagegen.zoo(photos[1])
    items = [data for data, _ in zoo.values()]
    want = torch_scorer.score(items)
    got = load_scorer(exported).score(items)
    assert list(got["status"]) == list(want["status"]) == [s for _, s in zoo.values()]
    assert list(got["error"]) == list(want["error"])
    assert (np.isnan(got["score"]) == np.isnan(want["score"])).all()
    ok = ~np.isnan(want["raw_score"])
    assert np.max(np.abs(got["raw_score"][ok] - want["raw_score"][ok])) <= 1e-4


def test_the_exported_file_scores_without_torch(exported, photos, tmp_path):
    """The README's plain-onnxruntime example, run as written, and fiqa's OnnxScorer: each
    in a fresh process, with no torch imported."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    example = re.search(r"<!-- onnx:example -->\n```python\n(.*?)```", readme, re.S).group(1)
    for i, photo in enumerate(photos[:2]):
        (tmp_path / f"face{i + 1}.jpg").write_bytes(imagegen.encode(photo, "JPEG", quality=95))
    os.symlink(exported, tmp_path / "student.onnx")
    no_torch = textwrap.dedent("""
        import sys
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("RESULT", list(map(float, score)))
    """)
    run = subprocess.run([sys.executable, "-c", example + no_torch], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    plain = json.loads(run.stdout.split("RESULT ")[1].replace("'", '"'))
    ours = textwrap.dedent(f"""
        from fiqa_core import OnnxScorer
        files = [open(f"face{{i}}.jpg", "rb").read() for i in (1, 2)]
        score = OnnxScorer({exported!r}).score(files)["score"]
    """)
    run = subprocess.run([sys.executable, "-c", ours + no_torch], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fiqa = json.loads(run.stdout.split("RESULT ")[1])
    # the same pixels, so the same scores
    np.testing.assert_allclose(plain, fiqa, rtol=0, atol=1e-6)
    assert abs(plain[0] - plain[1]) > 0.01  # two photos, two scores


def test_the_teacher_exports_too(tmp_path, photos):
    torch.manual_seed(1)
    model = create_model("teacher-swin-b", image_size=64)
    with torch.no_grad():
        model.quality[1].weight.mul_(30)
    ckpt = str(tmp_path / "teacher")
    save_checkpoint(model, ckpt)  # no calibration: score is raw_score
    out = str(tmp_path / "teacher.onnx")
    meta = export_onnx(ckpt, out)
    assert meta["preset"] == "teacher-swin-b" and meta["calibration"] is None
    want = Scorer.from_checkpoint(ckpt, device="cpu", precision="fp32").score(list(photos))
    for batch in (1, 4):
        got = OnnxScorer(out, batch_size=batch).score(list(photos))
        assert np.max(np.abs(got["raw_score"] - want["raw_score"])) <= 1e-4
        np.testing.assert_array_equal(got["score"], got["raw_score"])
    assert np.ptp(want["raw_score"]) > 0.05


def test_bad_input_is_a_clear_error(checkpoint, exported, tmp_path, capsys):
    # not our checkpoint: a folder of other files, and a reference .pt file
    other = tmp_path / "other"
    other.mkdir()
    torch.save({"w": torch.zeros(1)}, other / "model.pt")
    for model in (other, other / "model.pt"):
        assert cli.main(["export", f"model={model}", f"output={tmp_path}/x.onnx"]) == 2
        assert f"{model}: not a fiqa checkpoint" in capsys.readouterr().out
    with pytest.raises(NotFoundError, match="not a fiqa checkpoint"):
        export_onnx(str(other), str(tmp_path / "x.onnx"))
    # an output that cannot be written: its folder is a file; a folder; not .onnx
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["export", f"model={checkpoint}", f"output={blocker}/m.onnx"]) == 2
    assert f"cannot create the folder of output {blocker}/m.onnx" in capsys.readouterr().out
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        export_onnx(checkpoint, str(tmp_path / "dir.onnx"))
    with pytest.raises(ConfigError, match="ending in .onnx"):
        export_onnx(checkpoint, str(tmp_path / "m.pt"))
    # opsets: below what the exporter writes, above what it can convert this model to, and
    # a file stamped with an opset this onnxruntime does not run
    with pytest.raises(ConfigError, match="opset 17 is not supported.*opset 18, the default"):
        export_onnx(checkpoint, str(tmp_path / "m.onnx"), opset=17)
    if onnx.defs.onnx_opset_version() >= 26:  # older onnx packages refuse 26 up front
        assert cli.main(["export", f"model={checkpoint}", f"output={tmp_path}/m.onnx",
                         "opset=26"]) == 2
        assert ("exporter could not write opset 26 for this model (it wrote 18); choose "
                "another opset" in capsys.readouterr().out)
    future = onnx.load(exported)
    for entry in future.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    with pytest.raises(InputError, match=f"onnxruntime {re.escape(ort.__version__)} cannot "
                       r"load it .*[Oo]pset 99.*re-export with a lower one \(fiqa export opset"):
        OnnxScorer(future.SerializeToString(), source="future.onnx")
    assert not list(tmp_path.glob("m.onnx*"))  # nothing written for any of them
    # files the onnx engine cannot use: not ONNX, ONNX but not ours, absent
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InputError, match=f"{garbage}: onnxruntime .* cannot load it"):
        OnnxScorer(str(garbage))
    with pytest.raises(InputError, match="not a fiqa ONNX export"):
        OnnxScorer(_plain_onnx_model())
    with pytest.raises(InputError, match="no such ONNX file"):
        OnnxScorer(str(tmp_path / "absent.onnx"))
    # devices: the CPU package has no CUDA provider; an unknown device is a setting error
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="no CUDA provider.*install onnxruntime-gpu"):
            OnnxScorer(exported, device="cuda")
    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:N"):
        OnnxScorer(exported, device="gpu")
    # engine settings that do not fit the model
    with pytest.raises(ConfigError, match="torch engine setting"):
        load_scorer(exported, precision="bf16")
    with pytest.raises(ConfigError, match="is an ONNX file"):
        load_scorer(exported, engine="torch")


def test_an_export_that_fails_its_check_writes_nothing(checkpoint, tmp_path, capsys,
                                                       monkeypatch):
    from fiqa_core.engines import onnx_export

    monkeypatch.setattr(onnx_export, "PARITY_LIMIT", -1.0)  # every export fails its check
    out = tmp_path / "m.onnx"
    assert cli.main(["export", f"model={checkpoint}", f"output={out}"]) == 1
    text = capsys.readouterr().out
    assert "failed its check, no model file was written" in text and "differ from PyTorch's" in text
    assert not list(tmp_path.iterdir())


def test_exporting_again_replaces_the_file_and_its_sidecar(checkpoint, tmp_path, monkeypatch):
    from fiqa_core.engines import onnx_export

    out = tmp_path / "m.onnx"
    first = export_onnx(checkpoint, str(out), opset=18)
    second = export_onnx(checkpoint, str(out), opset=20)
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["opset"] == 20 != first["opset"] and sidecar == second
    assert sidecar["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # a replaced file whose sidecar was left behind: the driver reads the file instead
    (tmp_path / "m.onnx.json").write_text(json.dumps({**sidecar, "model_id": "old-id",
                                                      "onnx_bytes": 1}))
    assert read_model_config(str(out)).id == second["model_id"]
    # a write that fails leaves no sidecar of the previous export beside a half-new state
    real = onnx_export.storage.write_bytes

    def refuse_the_model(uri, data):
        if uri.endswith(".onnx"):
            raise PermissionError("read-only bucket")
        real(uri, data)

    monkeypatch.setattr(onnx_export.storage, "write_bytes", refuse_the_model)
    with pytest.raises(InputError, match=f"cannot write {out}: PermissionError: read-only"):
        export_onnx(checkpoint, str(out))
    assert not (tmp_path / "m.onnx.json").exists()


def test_export_to_an_object_store_uri(checkpoint):
    out = "memory://exports/student.onnx"
    meta = export_onnx(checkpoint, out)
    scorer = OnnxScorer(out)
    assert scorer.model_id == meta["model_id"] == read_model_config(out).id
    assert json.loads(storage.read_bytes(out + ".json"))["model_id"] == meta["model_id"]


def _plain_onnx_model() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)  # a valid ONNX model, just not a fiqa export
    return model.SerializeToString()


def test_scoring_jobs_on_the_onnx_engine(tmp_path, checkpoint, exported, ray_local):
    """fiqa pseudo-label with model=<file>.onnx, and fiqa score with engine=onnx on the
    checkpoint: the torch engine's rows, statuses and model id, scores to 1e-4."""
    from jobs import score as score_job
    from tests.test_score import cfg, image_files, make_lake, read_partition

    lake = tmp_path / "lake"
    expected = make_lake(lake, n_jpeg=24, n_png=8)
    runs = {}
    for name, model, extra, nightly in (
        ("torch", checkpoint, {}, False),
        ("file", exported, {}, False),
        ("engine", checkpoint, {"engine": "onnx", "run_date": "2026-01-02"}, True),
    ):
        out = tmp_path / name
        score_job.run(cfg(input=lake, model=model, output=out, **extra), nightly=nightly)
        runs[name] = read_partition(str(out)).set_index("path").sort_index()
    torch_rows = runs["torch"]
    for name in ("file", "engine"):
        rows = runs[name]
        assert list(rows.index) == image_files(lake)  # one row per image, none lost
        for column in ("status", "error", "width", "height", "model"):
            pd.testing.assert_series_equal(rows[column], torch_rows[column], check_dtype=False)
        ok = torch_rows["status"] == "ok"
        assert (rows.loc[ok, "raw_score"] - torch_rows.loc[ok, "raw_score"]).abs().max() <= 1e-4
        assert rows.loc[~ok, "score"].isna().all()
    for path, status in expected.items():
        assert runs["file"].at[path, "status"] == status
    # one model id on both engines: the next night on the torch engine reuses every row
    night = score_job.run(cfg(input=lake, model=checkpoint, output=tmp_path / "engine",
                              run_date="2026-01-03"), nightly=True)
    assert night["reused"] == len(torch_rows) and night["scored"] == 0
    # a stale sidecar (the driver plans from it) is caught where the file is loaded
    stale = tmp_path / "stale.onnx"
    stale.write_bytes(open(exported, "rb").read())
    side = json.loads(open(exported + ".json").read())
    (tmp_path / "stale.onnx.json").write_text(json.dumps({**side, "model_id": "other-id"}))
    assert read_model_config(str(stale)).id == "other-id"  # it looks like the file's own
    with pytest.raises(Exception, match=r"holds model student-edgenext-xxs-\w+, but this run "
                       r"was planned for other-id.*sidecar \(<file>.json\) is stale"):
        score_job.run(cfg(input=lake, model=stale, output=tmp_path / "stale"), nightly=False)
    assert not (tmp_path / "stale" / "_SUCCESS").exists()
    # the torch engine's settings are refused with the onnx one, before any work
    plain = [f"input={lake}", f"model={exported}", f"output={tmp_path / 'x'}"]
    for bad, message in (("precision=bf16", "torch engine setting"),
                         ("compile=true", "torch engine setting"),
                         ("device_decode=true", "torch engine setting"),
                         ("engine=torch", "is an ONNX file")):
        with pytest.raises(ConfigError, match=message):
            score_job.run(resolve_config(score_job.ScoreConfig, None, [*plain, bad]),
                          nightly=False)
    assert not (tmp_path / "x").exists()


def test_the_onnx_engine_on_a_gpu_cluster_without_onnxruntime_gpu(
        tmp_path, exported, ray_local, monkeypatch, caplog):
    """The driver's onnxruntime has no CUDA provider: an unset use_gpu scores on the CPUs
    and says so; use_gpu=true is refused before any work."""
    from fiqa_core.engines import onnx_engine
    from jobs import ray_env
    from jobs import score as score_job
    from tests.test_score import cfg, make_lake

    monkeypatch.setattr(ray_env, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setattr(onnx_engine, "cuda_available", lambda: False)
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=6, n_png=2, zoo=False)
    with caplog.at_level("WARNING", logger="fiqa.score"):
        summary = score_job.run(cfg(input=lake, model=exported, output=tmp_path / "cpu"),
                                nightly=False)
    assert summary["scored"] == 8
    assert "no CUDA provider: the onnx engine scores on CPUs" in caplog.text
    with pytest.raises(ConfigError, match="use_gpu=true with the onnx engine needs "
                       "onnxruntime's CUDA provider.*onnxruntime-gpu"):
        score_job.run(cfg(input=lake, model=exported, output=tmp_path / "gpu", use_gpu="true"),
                      nightly=False)
