import json
import subprocess
import sys

import pytest

from jobs import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "print versions, devices and model presets" in out
    for command in ("train", "pseudo-label", "score"):
        assert command in out


def test_job_subcommands_have_help():
    for command, prog in (("score", "fiqa score"), ("pseudo-label", "fiqa pseudo-label")):
        r = run(command, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: {prog}"), r.stderr
        assert "run_date" in r.stdout and "buckets" in r.stdout


def test_unknown_subcommand_is_an_error():
    r = run("bogus")
    assert r.returncode == 2 and "unknown command 'bogus'" in r.stderr


def test_info_json_reports_versions_devices_presets_and_cost():
    r = run("info", "--json", "--cost")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["versions"]["torch"].startswith("2.14.1")
    assert info["versions"]["ray"] and info["versions"]["fiqa"]
    assert info["devices"][0] == "cpu"
    presets = {p["name"]: p for p in info["presets"]}
    assert presets["student-edgenext-xxs"]["image_size"] == 352
    assert presets["student-edgenext-xxs"]["params"] == 1_179_641
    assert abs(presets["student-edgenext-xxs"]["gmacs"] - 0.4949) < 0.005
    assert presets["teacher-swin-b"]["image_size"] == 448


def test_info_text(capsys):
    from jobs import info

    assert info.main(info.get_args_parser().parse_args([])) == 0
    out = capsys.readouterr().out
    assert "student-edgenext-xxs" in out and "352 px" in out and "torch 2.14.1" in out


def test_fiqa_core_never_imports_ray():
    code = ("import sys, fiqa_core, fiqa_core.engines.torch_engine, fiqa_core.cost; "
            "print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_checkpoint_config_and_every_help_import_no_torch(tmp_path):
    """The driver reads a model's config and users read --help without paying for torch."""
    from fiqa_core import Calibration, create_model, save_checkpoint

    save_checkpoint(create_model("student-edgenext-xxs", image_size=64), str(tmp_path / "m"),
                    calibration=Calibration(5, 1, 0, 1))
    code = f"""
import contextlib, io, sys
from fiqa_core import get_preset, list_presets, read_checkpoint_config
c = read_checkpoint_config({str(tmp_path / "m")!r})
assert c.preprocessing.size == 64 and c.calibration.b1 == 5
assert [get_preset(p).preprocessing().size for p in list_presets()] == [352, 448]
heavy = [m for m in ("torch", "timm", "torchvision") if m in sys.modules]
print("config", heavy)
from jobs import cli
for command in cli.SUBCOMMANDS:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        cli.main([command, "--help"])
    assert out.getvalue().startswith("usage: fiqa " + command), command
    print(command, [m for m in ("torch", "ray") if m in sys.modules])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines == ["config []"] + [f"{c} []" for c in cli.SUBCOMMANDS]


def test_help_shows_every_setting_with_its_meaning_and_default(capsys):
    import dataclasses

    from jobs.demo import DemoConfig
    from jobs.evaluate import EvaluateConfig
    from jobs.export import ExportConfig
    from jobs.info import InfoConfig
    from jobs.report import ReportConfig
    from jobs.score import ScoreConfig
    from jobs.self_train import RoundConfig
    from jobs.train import TrainConfig
    from jobs.verify import VerifyConfig

    for command, settings in (("score", ScoreConfig), ("pseudo-label", ScoreConfig),
                              ("train", TrainConfig), ("self-train", RoundConfig),
                              ("evaluate", EvaluateConfig), ("demo", DemoConfig),
                              ("export", ExportConfig), ("verify", VerifyConfig),
                              ("info", InfoConfig), ("report", ReportConfig)):
        r = run(command, "--help")
        assert r.returncode == 0, r.stderr
        text = " ".join(r.stdout.split())  # argparse wraps lines
        for f in dataclasses.fields(settings):
            assert f"{f.name}=VALUE" in text, (command, f.name)
            assert f.metadata["help"] and " ".join(f.metadata["help"].split()) in text
    text = " ".join(run("score", "--help").stdout.split())
    assert "buckets=VALUE output partitions by a stable hash of the path" in text
    assert "[int; default: 64]" in text and "input=VALUE" in text and "[str; required]" in text
    assert "fail_after" not in text and "inject" not in text  # test hooks are not settings
    assert "fail_at_epoch" not in run("train", "--help").stdout


# per command: its settings class, required settings, a boolean and a number setting
SETTINGS_CASES = {
    "info": ("jobs.info:InfoConfig", {}, "json", None),
    "train": ("jobs.train:TrainConfig", {"labels": "l.csv", "output": "o"}, "compile", "epochs"),
    "pseudo-label": ("jobs.score:ScoreConfig", {"input": "i/", "model": "m", "output": "o"},
                     "draft", "buckets"),
    "score": ("jobs.score:ScoreConfig", {"input": "i/", "model": "m", "output": "o"}, "draft",
              "buckets"),
    "self-train": ("jobs.self_train:RoundConfig",
                   {"labels": "l.csv", "unlabeled_a": "a/", "unlabeled_b": "b/", "output": "o"},
                   None, "seed"),
    "evaluate": ("jobs.evaluate:EvaluateConfig", {"model": "m", "labels": "l.csv"}, "json",
                 None),
    "export": ("jobs.export:ExportConfig", {"model": "m", "output": "m.onnx"}, "json", "opset"),
    "verify": ("jobs.verify:VerifyConfig", {"output": "o"}, "rows", None),
    "faces": ("jobs.faces:FacesConfig", {"input": "i/", "output": "o"}, None, "min_face"),
    "demo": ("jobs.demo:DemoConfig", {}, None, "labeled"),
    "report": ("jobs.report:ReportConfig", {"output": "o"}, None, "gallery"),
}


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS))
def test_every_command_takes_key_value_and_flag_settings_in_any_order(command, tmp_path):
    import importlib

    from fiqa_core.config import resolve_config

    where, required, flag, number = SETTINGS_CASES[command]
    module_name, cls_name = where.split(":")
    settings = getattr(importlib.import_module(module_name), cls_name)
    parser = importlib.import_module(cli.SUBCOMMANDS[command][0]).get_args_parser()
    pairs = list(required.items()) + ([(number, 7)] if number else [])
    (tmp_path / "c.yaml").write_text("".join(f"{k}: {v}\n" for k, v in pairs[:1]))
    # key=value, then --key value, alternating, a bare boolean flag in the middle
    argv = ["--config", str(tmp_path / "c.yaml")] if pairs else []
    for i, (k, v) in enumerate(pairs[1:]):
        argv += [f"{k}={v}"] if i % 2 == 0 else [f"--{k}", str(v)]
        if i == 0 and flag:
            argv.append(f"--{flag}")
    if flag and len(pairs) < 2:
        argv.append(f"--{flag}")
    args = cli.parse_args(parser, argv)
    cfg = resolve_config(settings, args.config, cli.overrides_of(args))
    for k, v in pairs:
        assert getattr(cfg, k) == v, (command, k)
    if flag:
        assert getattr(cfg, flag) is True


def test_settings_errors_are_one_line_config_errors(tmp_path):
    from fiqa_core.config import resolve_config
    from fiqa_core.errors import ConfigError
    from jobs.train import TrainConfig

    with pytest.raises(ConfigError, match=r"override 'labels=\[a': not valid YAML"):
        resolve_config(TrainConfig, None, ["labels=[a", "output=o"])
    (tmp_path / "bad.yaml").write_text("labels: [a\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        resolve_config(TrainConfig, str(tmp_path / "bad.yaml"), ["output=o"])
    with pytest.raises(ConfigError, match="'false' is not of the form key=value .*draft=false"):
        resolve_config(TrainConfig, None, ["labels=l", "output=o", "false"])
    from jobs.score import ScoreConfig

    with pytest.raises(ConfigError, match="command line: precision must be one of auto, fp32, "
                                          "bf16, got 'fp16'"):
        resolve_config(ScoreConfig, None, ["input=i/", "model=m", "output=o", "precision=fp16"])
    assert resolve_config(ScoreConfig, None, ["input=i/", "model=m", "output=o",
                                              "precision=bf16"]).precision == "bf16"


def test_error_policy_user_errors_bugs_and_failed_jobs(capsys):
    from fiqa_core.errors import ConfigError

    def bad_setting():
        raise ConfigError("batch_size must be >= 1")

    assert cli.run_job("fiqa x", bad_setting) == 2
    assert capsys.readouterr().out == "fiqa x: error: batch_size must be >= 1\n"

    def bug():
        return {}["missing"]  # a KeyError deep in the code is a bug, not a user error

    with pytest.raises(KeyError):
        cli.run_job("fiqa x", bug)

    def deep():
        raise RuntimeError("disk full at shard 17")

    def failed_job():
        try:
            deep()
        except RuntimeError as e:
            raise cli.JobFailed("training failed; rerun to resume") from e

    assert cli.run_job("fiqa x", failed_job) == 1
    out, err = capsys.readouterr()
    assert out == "fiqa x: training failed; rerun to resume\n"
    assert "Traceback" in err and "in deep" in err and "disk full at shard 17" in err
