"""A whole self-training round, leases and two runs at once on a real S3-compatible server
(SeaweedFS, a separate process on 127.0.0.1, with request signatures checked), reached only
through real clients (boto3, s3fs, pyarrow, Ray Data) and the standard environment:
credentials and ``AWS_ENDPOINT_URL``. Nothing is patched in-process."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.demo_data import write_demo_sets
from tests.s3server import make_bucket

BUCKET = "fiqa-test"
TINY = {
    "teacher": {"image_size": 32, "epochs": 1, "pretrained": False, "batch_size": 16,
                "preset": "student-edgenext-xxs"},
    "enhanced_teacher": {"epochs": 1},
    "student": {"image_size": 32, "epochs": 1, "pretrained": False, "batch_size": 16},
    "pseudo_label": {"buckets": 4, "scorers": 1},
}


@pytest.fixture(scope="module")
def s3(s3_env):
    return s3_env


def upload(folder: Path, prefix: str) -> int:
    import boto3

    client = boto3.client("s3")
    n = 0
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(folder)}")
            n += 1
    return n


def test_round_reads_and_writes_s3(s3, tmp_path):
    import boto3
    import pyarrow.fs
    import pyarrow.parquet as pq

    from fiqa_core import Scorer
    from fiqa_core.evaluation import predict_table
    from fiqa_core.tables import read_labels, read_parquet
    from jobs import self_train

    make_bucket(s3.endpoint, BUCKET)
    write_demo_sets(str(tmp_path / "demo"), labeled=40, test=12, unlabeled_a=24, unlabeled_b=24)
    (tmp_path / "demo" / "truth.csv").unlink()  # local paths: not part of the bucket's data
    assert upload(tmp_path / "demo", "demo") == 40 + 12 + 26 + 25 + 2  # + labeled/test CSVs
    root = f"s3://{BUCKET}/demo"
    config = {
        "labels": f"{root}/labeled.csv",
        "test_labels": f"{root}/test.csv",
        "unlabeled_a": f"{root}/set_a/",
        "unlabeled_b": f"{root}/set_b/",
        "output": f"s3://{BUCKET}/rounds/r1",
        **TINY,
    }
    boto3.client("s3").put_object(
        Bucket=BUCKET, Key="rounds/r1.yaml", Body=yaml.safe_dump(config).encode()
    )
    args = self_train.get_args_parser().parse_args(["--config", f"s3://{BUCKET}/rounds/r1.yaml"])
    assert self_train.main(args) == 0

    # read back with pyarrow's own S3 client
    fs = pyarrow.fs.S3FileSystem(endpoint_override=s3.endpoint, access_key=s3.access_key,
                                 secret_key=s3.secret_key, region=s3.region, scheme="http")
    out = f"{BUCKET}/rounds/r1"

    def table(folder):
        files = [f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(folder, recursive=True))
                 if f.path.endswith(".parquet")]
        return pq.read_table(files, filesystem=fs).to_pandas()

    a, b = table(f"{out}/pseudo/a"), table(f"{out}/pseudo/b")
    assert len(a) == 26 and a["path"].is_unique and a["path"].str.startswith(f"{root}/set_a/").all()
    assert sorted(a.loc[a["status"] != "ok", "status"]) == ["not_image", "truncated"]
    assert len(b) == 24 and (b["status"] == "ok").all()
    for name in self_train.STAGES:
        record = json.loads(fs.open_input_stream(f"{out}/stages/{name}.json").read())
        assert record["status"] == "done" and record["key"]
    for m in self_train.MODELS:
        assert fs.get_file_info(f"{out}/models/{m}/model.safetensors").size > 1_000_000
        ckpt = json.loads(fs.open_input_stream(f"{out}/models/{m}/config.json").read())
        assert ckpt["lineage"]["labels"] == f"s3://{out}/data/train_labels.parquet"
    assert fs.get_file_info(f"{out}/pseudo/a/_SUCCESS").type == pyarrow.fs.FileType.File
    report = fs.open_input_stream(f"{out}/report/report.md").read().decode()
    assert "| A | 26 | 24 | not_image: 1, truncated: 1 |" in report

    # the student, loaded straight from the bucket, reproduces the round's predictions
    scorer = Scorer.from_checkpoint(f"s3://{out}/models/student", device="cpu")
    again = predict_table(scorer, read_labels(f"s3://{out}/data/test_labels.parquet"))
    saved = read_parquet(f"s3://{out}/eval/predictions/student.parquet")
    assert len(saved) == 12 and list(again["path"]) == list(saved["path"])
    np.testing.assert_allclose(again["raw_score"], saved["raw_score"], atol=1e-5)


def test_leases_with_conditional_writes(s3):
    """If-None-Match creates, If-Match renews, takes over and releases."""
    import json
    import time

    import fsspec

    from fiqa_core.errors import LeaseLost, OutputBusy
    from fiqa_core.lease import LEASE, Lease

    fs = fsspec.filesystem("s3")
    fs.mkdir("lease-bucket")
    out = "s3://lease-bucket/scores/date=2026-11-28"
    with Lease(out, "first on s3", ttl_s=1.2):
        with pytest.raises(OutputBusy, match="first on s3"):
            Lease(out, "second", ttl_s=1.2).acquire()
        time.sleep(1.5)  # renewed (If-Match on its own ETag) meanwhile: still busy
        with pytest.raises(OutputBusy):
            Lease(out, "third", ttl_s=1.2).acquire()
    fs.invalidate_cache()
    assert not fs.exists(out + "/" + LEASE)
    # a dead holder's lease (never renewed) is taken over once expired
    fs.pipe(out + "/" + LEASE, json.dumps({"holder": "dead", "renewed": time.time() - 10,
                                           "ttl_s": 1.2, "command": "dead run"}).encode())
    with Lease(out, "taker", ttl_s=1.2) as lease:
        lease.check()
        fs.invalidate_cache()
        assert json.loads(fs.cat(out + "/" + LEASE))["command"] == "taker"
        # another run overwrites it (as after a takeover): renewing fails its If-Match
        fs.pipe(out + "/" + LEASE, json.dumps({"holder": "other", "renewed": time.time(),
                                               "ttl_s": 60}).encode())
        lease.renew()
        assert lease.lost
        with pytest.raises(LeaseLost, match="not committed"):
            lease.check()
    fs.invalidate_cache()
    assert json.loads(fs.cat(out + "/" + LEASE))["holder"] == "other"  # not ours to delete


def test_two_scoring_runs_on_one_s3_output_write_each_row_once(s3, tmp_path):
    """The second run is refused through the S3 lease (If-None-Match), the first completes."""
    import boto3
    import fsspec
    import pyarrow.parquet as pq
    import torch

    from fiqa_core import Calibration, create_model, save_checkpoint
    from fiqa_core.lease import LEASE
    from jobs.cli import main as cli_main
    from tests import imagegen
    from tests.test_concurrency import start

    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    for i in range(2):
        imagegen.write_labeled_set(tmp_path / "lake" / f"part{i}", 30, seed=i, size=(40, 48))
    n = upload(tmp_path / "lake", "two-runs/lake")
    torch.manual_seed(0)
    save_checkpoint(create_model("student-edgenext-xxs", image_size=32), str(tmp_path / "m"),
                    calibration=Calibration(5.0, 1.0, 0.0, 0.05))
    out = f"s3://{BUCKET}/two-runs/pl"
    args = ["pseudo-label", f"input=s3://{BUCKET}/two-runs/lake/", f"model={tmp_path / 'm'}",
            f"output={out}", "buckets=4", "scorers=1", "precision=fp32"]
    first = start(*args)
    fs = fsspec.filesystem("s3")
    t0 = time.time()
    while not fs.exists(f"{out}/{LEASE}"):
        assert first.poll() is None, first.stdout.read()
        assert time.time() - t0 < 120
        time.sleep(0.3)
        fs.invalidate_cache()
    assert cli_main(args[:]) == 3  # refused at once, the first one named
    assert first.wait(timeout=300) == 0, first.stdout.read()
    fs.invalidate_cache()
    paths = []
    for f in fs.find(out):
        if f.endswith(".parquet"):
            with fs.open(f, "rb") as fh:
                paths += pq.read_table(fh).column("path").to_pylist()
    lake_images = sum(1 for p in paths if p.endswith(".jpg"))
    assert len(paths) == len(set(paths)) == lake_images == n  # each image exactly once
    assert json.loads(fs.cat(f"{out}/_SUCCESS"))["rows"] == len(paths)
    assert not fs.exists(f"{out}/{LEASE}")
    # the run's report, on the store beside _SUCCESS, its thumbnails read from the store
    from jobs import report
    from tests.test_report import _page_images

    assert json.loads(fs.cat(f"{out}/{report.JSON}"))["counts"]["rows"] == len(paths)
    thumbs = _page_images(fs.cat(f"{out}/{report.HTML}").decode())[1:]
    assert len(thumbs) == 24 and all(t[:2] == b"\xff\xd8" for t in thumbs)  # JPEGs
