"""``fiqa faces``: photographs -> aligned face crops with their boxes and landmarks, on a
local folder and on a real S3-compatible server (SeaweedFS) whose writes fail: every placed
face once as a crop file, a row per photo without a face or that could not be read, a
committed output never changed by a later run, a failed run leaving nothing committed and
its rerun no stray crop."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fiqa_core.config import resolve_config
from fiqa_core.errors import ConfigError
from jobs import faces as faces_job
from jobs.cli import JobFailed
from tests import imagegen
from tests.test_faces import iou
from tests.test_faces_night import make_photo_lake

BUCKET = "fiqa-faces"


def cfg(**kw):
    return resolve_config(faces_job.FacesConfig, None, [f"{k}={v}" for k, v in kw.items()]
                          + ["batch_size=8"])


def read_rows(uri: str):
    from fiqa_core import storage

    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pandas()


def check_rows(rows, placed, broken, lake: str, side: int, read):
    faces = sum(len(b) for b in placed.values())
    photos = len(placed) + len(imagegen.FACE_FREE) + len(broken)
    assert rows["path"].nunique() == photos and len(rows) == faces + photos - len(placed)
    for path, boxes in placed.items():
        mine = rows[rows["path"] == path].sort_values("face")
        assert list(mine["face"]) == list(range(len(boxes))) and (mine["status"] == "ok").all()
        for box in boxes:  # each placed face once, found where it was put
            assert max(iou(box, list(b)) for b in mine["face_box"]) >= 0.5, (path, box)
        for crop, face in zip(mine["crop"], mine["face"], strict=True):
            assert crop.endswith(f"/crops/{path.rsplit('/', 1)[1]}.face{int(face)}.png")
            img = Image.open(io.BytesIO(read(crop)))
            assert img.format == "PNG" and img.size == (side, side) and img.mode == "RGB"
    for name in imagegen.FACE_FREE:
        r = rows[rows["path"] == f"{lake}/{name}.jpg"]
        assert list(r["status"]) == ["no_face"] and r["crop"].isna().all()
    assert dict(zip(rows["path"], rows["status"], strict=True)).items() >= broken.items()


def test_photos_become_face_crops_and_a_committed_output_is_never_changed(
        tmp_path, ray_local):
    lake, out = tmp_path / "lake", tmp_path / "out"
    lake.mkdir()
    placed, broken = make_photo_lake(lake)
    stray = out / "crops" / "gone.jpg.face3.png"  # an earlier attempt's crop
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    summary = faces_job.run(cfg(input=lake, output=out))
    rows = read_rows(str(out / "faces.parquet"))
    check_rows(rows, placed, broken, str(lake), 512, lambda p: open(p, "rb").read())
    assert not stray.exists() and summary["stray_crops_removed"] == 1
    marker = json.loads((out / "_SUCCESS").read_text())
    assert marker["faces_found"] == sum(len(b) for b in placed.values()) == len(
        list((out / "crops").iterdir()))
    assert marker["by_status"]["no_face"] == len(imagegen.FACE_FREE)
    assert marker["images"] == marker["photos"] == rows["path"].nunique()

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = faces_job.run(cfg(input=lake, output=out))  # the same: nothing to do
    assert again == marker
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError, match="another output"):
        faces_job.run(cfg(input=lake, output=out, face_template="arcface112"))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before

    largest = faces_job.run(cfg(input=lake, output=tmp_path / "largest", faces="largest",
                                face_template="arcface112", format="jpeg"))
    one = read_rows(str(tmp_path / "largest" / "faces.parquet"))
    assert len(one) == one["path"].nunique() == largest["images"]
    assert set(one["face"].dropna()) == {0} and largest["faces_found"] == len(placed)
    crop = one["crop"].dropna().iloc[0]
    assert crop.endswith(".face0.jpeg") and Image.open(crop).size == (112, 112)


@pytest.mark.parametrize("args, message", [
    ({"output": "{lake}/crops"}, "is under input"),
    ({"min_face": 0}, "min_face"),
    ({"face_template": "model"}, "face_template"),
    ({"faces": "none"}, "faces"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, args, message, capsys):
    from jobs.cli import main

    lake = tmp_path / "lake"
    lake.mkdir()
    settings = {"input": lake, "output": tmp_path / "out",
                **{k: str(v).format(lake=lake) for k, v in args.items()}}
    code = main(["faces", *(f"{k}={v}" for k, v in settings.items())])
    assert code == 2 and not (tmp_path / "out").exists()
    printed = capsys.readouterr()
    assert message in printed.out + printed.err


def test_on_s3_a_failed_write_commits_nothing_and_the_rerun_completes(s3_env, tmp_path):
    import boto3

    from fiqa_core import storage
    from tests.s3server import Fault, make_bucket

    make_bucket(s3_env.endpoint, BUCKET)
    lake = tmp_path / "lake"
    lake.mkdir()
    placed, broken = make_photo_lake(lake)
    client = boto3.client("s3")
    for f in sorted(lake.iterdir()):
        client.upload_file(str(f), BUCKET, f"photos/{f.name}")
    src, out = f"s3://{BUCKET}/photos", f"s3://{BUCKET}/sets/faces"
    rule = s3_env.faults.add(Fault(method="PUT", key=r"three\.jpg\.face1\.png$", times=None))
    with pytest.raises(JobFailed, match="nothing was committed"):
        faces_job.run(cfg(input=src, output=out))
    assert rule.fired >= 3  # the store's retries, then the run failed
    assert not storage.exists(f"{out}/_SUCCESS")
    s3_env.faults.remove(rule)
    client.put_object(Bucket=BUCKET, Key="sets/faces/crops/old.jpg.face0.png", Body=b"x")
    summary = faces_job.run(cfg(input=src, output=out))
    rows = read_rows(f"{out}/faces.parquet")
    moved = {f"{src}/{p.rsplit('/', 1)[1]}": b for p, b in placed.items()}
    check_rows(rows, moved, {f"{src}/{p.rsplit('/', 1)[1]}": s for p, s in broken.items()},
               src, 512, storage.read_bytes)
    assert summary["stray_crops_removed"] == 1
    keys = {o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix="sets/faces/crops/")["Contents"]}
    assert keys == {c.removeprefix(f"s3://{BUCKET}/") for c in rows["crop"].dropna()}
    assert np.isfinite(rows["face_score"].dropna()).all()
