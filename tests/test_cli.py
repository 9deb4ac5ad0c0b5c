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
    code = "import sys, fiqa_core, fiqa_core.scorer, fiqa_core.cost; print('ray' in sys.modules)"
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
    from jobs.info import InfoConfig
    from jobs.score import ScoreConfig
    from jobs.self_train import RoundConfig
    from jobs.train import TrainConfig

    for command, settings in (("score", ScoreConfig), ("pseudo-label", ScoreConfig),
                              ("train", TrainConfig), ("self-train", RoundConfig),
                              ("evaluate", EvaluateConfig), ("demo", DemoConfig),
                              ("info", InfoConfig)):
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


def test_every_command_takes_key_value_and_flag_settings():
    from fiqa_core.config import resolve_config
    from jobs import evaluate

    for argv in (["model=m", "labels=l.csv", "json=true"], ["--model", "m", "--labels", "l.csv",
                                                            "--json"]):
        args = evaluate.get_args_parser().parse_args(argv)
        cfg = resolve_config(evaluate.EvaluateConfig, args.config, cli.overrides_of(args))
        assert (cfg.model, cfg.labels, cfg.json, cfg.output) == ("m", "l.csv", True, None)


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
