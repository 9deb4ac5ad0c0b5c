"""The cluster configs parse, name entrypoints that exist here, and ask for what the jobs need."""

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml

from fiqa_core.config import ConfigError, parse_overrides, resolve_config
from jobs import cli, self_train
from jobs.score import ScoreConfig
from jobs.train import TrainConfig

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
PINS = dict(
    line.split("==")
    for line in (CLUSTER.parent / "constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
)
SETTINGS = {"score": ScoreConfig, "pseudo-label": ScoreConfig, "train": TrainConfig,
            "self-train": self_train.RoundConfig}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def yaml_files() -> list[Path]:
    return sorted(CLUSTER.rglob("*.yaml"))


def test_every_yaml_parses():
    assert len(yaml_files()) >= 7
    for f in yaml_files():
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


def test_ray_versions_match_the_pin():
    pin = PINS["ray"]
    assert f"FROM rayproject/ray:{pin}-py311-gpu" in (CLUSTER / "Dockerfile").read_text()
    assert load("kuberay/raycluster.yaml")["spec"]["rayVersion"] == pin
    assert load("kuberay/rayjob-self-train.yaml")["spec"]["rayClusterSpec"]["rayVersion"] == pin


def check_command(argv: list[str]) -> None:
    """A ``fiqa`` command line: a real subcommand whose key=value settings all exist."""
    assert argv[0] == "fiqa" and argv[1] in cli.SUBCOMMANDS, argv
    args = argv[2:]
    if "--config" in args:
        i = args.index("--config")
        assert args[i + 1].startswith("s3://"), args
        args = args[:i] + args[i + 2:]
    values = parse_overrides(args)
    cls = SETTINGS[argv[1]]
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    assert not unknown, (argv, unknown)
    if "--config" not in argv:
        resolve_config(cls, None, args)  # complete and well typed


def test_entrypoints_are_fiqa_commands_with_real_settings():
    check_command(shlex.split(load("kuberay/rayjob-self-train.yaml")["spec"]["entrypoint"]))
    check_command(shlex.split(load("kuberay/rayjob-score.yaml")["spec"]["entrypoint"]))
    cron = load("kuberay/cronjob-nightly-score.yaml")
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    check_command(command[command.index("--") + 1:])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_checker_refuses_a_misspelt_setting():
    with pytest.raises(AssertionError):
        check_command(["fiqa", "score", "input=s3://a/", "model=s3://m", "output=s3://o",
                       "scorer=8"])
    with pytest.raises(ConfigError):
        check_command(["fiqa", "score", "input=s3://a/", "model=s3://m"])  # no output


def gpu_workers(group: dict) -> int:
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return group["replicas"] * int(limits.get("nvidia.com/gpu", 0))


def test_round_job_has_a_gpu_for_every_training_worker_and_scorer():
    spec = load("kuberay/rayjob-self-train.yaml")["spec"]["rayClusterSpec"]
    gpus = sum(gpu_workers(g) for g in spec["workerGroupSpecs"])
    round_cfg = resolve_config(self_train.RoundConfig, str(CLUSTER / "round.example.yaml"))
    jobs = self_train.stage_jobs(round_cfg)  # every role's settings validate
    for name in self_train.MODELS:
        job = jobs[name]
        assert job.use_gpu is True and job.num_workers <= gpus, name
        assert job.batch_size % job.num_workers == 0
    assert jobs["pseudo_a"].scorers <= gpus
    assert jobs["teacher0"].preset == "teacher-swin-b"
    assert jobs["student"].preset == "student-edgenext-xxs"


def test_head_runs_no_work_and_autoscaling_bounds_hold():
    for spec in (load("kuberay/raycluster.yaml")["spec"],
                 load("kuberay/rayjob-self-train.yaml")["spec"]["rayClusterSpec"]):
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for g in spec["workerGroupSpecs"]:
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
            assert gpu_workers(g) == g["replicas"]  # one GPU per worker pod
    launcher = load("launcher/aws-gpu.yaml")
    assert launcher["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert launcher["max_workers"] >= launcher["available_node_types"]["gpu_worker"]["max_workers"]
    assert launcher["docker"]["image"] == load("kuberay/raycluster.yaml")["spec"][
        "headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_no_credentials_in_cluster_files():
    secret = re.compile(
        r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID"
        r"|private_key|BEGIN [A-Z ]*PRIVATE KEY",
        re.I,
    )
    for f in CLUSTER.rglob("*"):
        if f.is_file():
            assert not secret.search(f.read_text()), f


def test_runtime_env_example_excludes_the_virtualenv():
    env = load("runtime_env/working_dir.yaml")
    assert env["working_dir"] == "." and ".venv/" in env["excludes"]
