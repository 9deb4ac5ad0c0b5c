import json
import subprocess
import sys

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
