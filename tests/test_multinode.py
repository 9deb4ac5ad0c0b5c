"""A real two-node Ray cluster on 127.0.0.1 (``ray start --head`` + ``ray start --address``),
jobs submitted through Ray's own job client with a working dir, and a node lost mid-job."""

import time
from pathlib import Path

import pandas as pd
import pytest

from fiqa_core import Calibration, create_model, save_checkpoint
from jobs.demo_data import load_photos, write_images
from tests.helpers import ROOT, LocalCluster

EXCLUDES = [".venv/", ".git/", "runs/", "**/__pycache__/", ".pytest_cache/", ".ruff_cache/"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    write_images(str(root / "images"), 600, seed=5, stream=1, photos=load_photos())
    model = create_model("student-edgenext-xxs", image_size=64)
    save_checkpoint(model, str(root / "model"), calibration=Calibration(5.0, 1.0, 0.0, 0.5))
    return root


@pytest.fixture
def cluster():
    c = LocalCluster(head_cpus=3)
    try:
        c.worker_port = c.add_worker(cpus=2, resources='{"second_node": 1}')
        yield c
    finally:
        c.stop()
    assert c.processes() == []  # nothing of it is left running


def submit(cluster: LocalCluster, lake: Path, out: Path) -> tuple[object, str]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url)
    job = client.submit_job(
        entrypoint=(
            f"python -m jobs.cli pseudo-label input={lake / 'images'} model={lake / 'model'} "
            f"output={out} scorers=2 scorer_cpus=0.5 decode_batch_size=16 batch_size=32 "
            "buckets=8"
        ),
        runtime_env={
            "working_dir": str(ROOT),
            "excludes": EXCLUDES,
            "env_vars": {"HF_HUB_OFFLINE": "1"},
        },
    )
    return client, job


def wait(client, job: str, timeout: float = 420, until=None) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        if until is not None and until(status):
            return status
        time.sleep(0.5)
    client.stop_job(job)
    raise TimeoutError(f"job {job} still {status} after {timeout} s:\n{client.get_job_logs(job)}")


def check_output(out: Path, n: int) -> pd.DataFrame:
    rows = pd.read_parquet(out)
    assert len(rows) == n and rows["path"].is_unique  # every image exactly once
    assert (rows["status"] == "ok").all() and rows["score"].notna().all()
    assert (out / "_SUCCESS").exists()
    return rows


def test_job_submitted_to_a_two_node_cluster(cluster, lake, tmp_path):
    from ray.util.state import list_nodes

    nodes = list_nodes(address=cluster.dashboard_url)
    assert sorted(n.resources_total.get("CPU") for n in nodes if n.state == "ALIVE") == [2, 3]
    client, job = submit(cluster, lake, tmp_path / "out")
    status = wait(client, job)
    logs = client.get_job_logs(job)
    assert status == "SUCCEEDED", logs
    assert "Scored 600 images" in logs
    rows = check_output(tmp_path / "out", 600)
    assert set(rows["path"]) == {str(p) for p in (lake / "images").rglob("*.*")}


def work_on(cluster: LocalCluster, resource: str) -> list[str]:
    """The pipeline's work on the node that has ``resource``, from Ray's state API: live
    scoring actors there, and read/decode tasks that ran or run there (each lasts a
    fraction of a second, too short to be caught running every time)."""
    from ray.util.state import list_actors, list_nodes, list_tasks

    url = cluster.dashboard_url
    nodes = list_nodes(address=url, filters=[("state", "=", "ALIVE")])
    node = next(n.node_id for n in nodes if n.resources_total.get(resource))
    actors = list_actors(address=url, filters=[("state", "=", "ALIVE")], limit=10_000)
    tasks = list_tasks(address=url, limit=10_000)
    return ([f"actor {a.class_name}" for a in actors
             if a.node_id == node and "ScoreActor" in a.class_name]
            + [f"task {t.name}" for t in tasks if t.node_id == node and "read_batch" in t.name])


def test_job_survives_losing_the_worker_node(cluster, lake, tmp_path):
    out = tmp_path / "out"
    client, job = submit(cluster, lake, out)
    # kill the second node's raylet, mid-job, once the pipeline has worked there: a scoring
    # actor alive, or read/decode tasks run there (results are written in large batches,
    # so no shard appears before the end of a run this small)
    status = wait(client, job, until=lambda s: s == "RUNNING" and work_on(cluster, "second_node"))
    assert status == "RUNNING", client.get_job_logs(job)
    assert work_on(cluster, "second_node")  # the node about to die holds the job's work
    assert not (out / "_SUCCESS").exists()
    assert cluster.kill_raylet(cluster.worker_port) == 1
    status = wait(client, job)
    logs = client.get_job_logs(job)
    assert status == "SUCCEEDED", logs
    check_output(out, 600)
