"""The face path of a GPU node, run here on the CPU: the face stage passes each read photo
on as its bytes and the scoring actor decodes, detects (RetinaFace in torch, batched),
aligns and resizes on its device (jobs.score.faces_stage.device_faces). Its rows and crops
agree with the CPU tasks' path (onnxruntime, PIL), row for row; a night run that way reuses
the CPU night's rows (one pipeline id) and scores what the CPU path scores."""

import numpy as np
import pyarrow as pa
import pytest

from jobs import score as score_job
from jobs.score.faces_stage import DEVICE_CHUNK, device_faces, faces_batch
from jobs.score.pipeline import DEFERRED, read_batch
from jobs.score.schema import PLAN_SCHEMA
from tests.test_faces_night import make_photo_lake
from tests.test_score import cfg, checkpoint, read_partition  # noqa: F401  (fixture)

SIZE = 96
FACE = {"template": "model", "threshold": 0.9, "min_face": 16, "mode": "all"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    placed, broken = make_photo_lake(root)
    paths = sorted(str(p) for p in root.iterdir())
    plan = pa.table({"path": paths, "size": [0] * len(paths), "mtime": [0.0] * len(paths),
                     "etag": [None] * len(paths), "bucket": [0] * len(paths)},
                    schema=PLAN_SCHEMA)
    return root, placed, broken, read_batch(plan, threads=1)


def _numpy(table: pa.Table) -> dict:
    return {k: np.array(table.column(k).to_pylist(), dtype=object) for k in table.column_names}


def test_the_device_path_gives_the_cpu_paths_rows_and_crops(lake, monkeypatch):
    from fiqa_core.faces import Detector, DetectSettings

    root, placed, broken, read = lake
    settings = dict(size=SIZE, max_pixels=10**8, face=FACE)
    cpu = faces_batch(read, **settings).to_pandas()
    passed = faces_batch(read, **settings, defer=True)
    assert passed.num_rows == read.num_rows  # the task passes photos on, one row each
    status = passed.column("status").to_pylist()
    assert status.count(DEFERRED) == read.column("status").to_pylist().count("") > 0
    assert passed.column("encoded").to_pylist() == read.column("encoded").to_pylist()
    monkeypatch.setattr("jobs.score.faces_stage.DEVICE_CHUNK", 3)  # chunks split the batch
    assert DEVICE_CHUNK > 3
    det = Detector(DetectSettings(threshold=0.9, min_face=16), backend="torch")
    rows, pixels = device_faces(_numpy(passed), det, FACE, SIZE, 10**8)
    assert len(rows["path"]) == len(cpu) == pixels.shape[0] and pixels.shape[1:] == (
        SIZE, SIZE, 3)
    for k in ("path", "status", "face", "face_count", "width", "height"):
        assert [None if v != v else v for v in rows[k]] == [
            None if v != v else v for v in cpu[k]], k  # NaN: a null of pandas
    assert {p: s for p, s in zip(rows["path"], rows["status"], strict=True)
            if p in broken} == broken
    cpu_pixels = np.stack([np.frombuffer(b, np.uint8).reshape(SIZE, SIZE, 3) if b
                           else np.zeros((SIZE, SIZE, 3), np.uint8) for b in cpu["pixels"]])
    for k, box in enumerate(rows["face_box"]):
        if box is None:
            assert cpu["face_box"][k] is None and not pixels[k].any()
            continue
        assert np.abs(np.subtract(box, cpu["face_box"][k])).max() < 1.0
        diff = np.abs(pixels[k].numpy().astype(int) - cpu_pixels[k].astype(int))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (rows["path"][k], diff.max())
    faces = sum(len(b) for b in placed.values())
    assert sum(s == "ok" for s in rows["status"]) == faces


def test_a_night_on_the_device_path_reuses_and_matches_the_cpu_night(
        tmp_path, lake, checkpoint, ray_local):  # noqa: F811
    root, placed, broken, _ = lake
    out = tmp_path / "scores"
    first = score_job.run(cfg(input=root, model=checkpoint, output=out,
                              run_date="2026-12-01", faces="all"))
    device = score_job.run(cfg(input=root, model=checkpoint, output=tmp_path / "device",
                               faces="all", device_decode="true"), nightly=False)
    assert device["pipeline"] == first["pipeline"]  # the same rows, by other means
    assert first["face_detection"] == "cpu tasks (onnxruntime)"
    assert device["face_detection"] == "scoring actors (cpu, torch)"
    assert (device["rows"], device["face_rows"]) == (first["rows"], first["face_rows"])
    a = read_partition(str(out / "date=2026-12-01")).sort_values(["path", "face"])
    b = read_partition(str(tmp_path / "device")).sort_values(["path", "face"])
    assert list(a["path"]) == list(b["path"]) and list(a["status"]) == list(b["status"])
    ok = (a["status"] == "ok").to_numpy()
    assert np.abs(a["score"].to_numpy()[ok] - b["score"].to_numpy()[ok]).max() < 0.05
    again = score_job.run(cfg(input=root, model=checkpoint, output=out,
                              run_date="2026-12-02", faces="all", device_decode="true"))
    assert (again["scored"], again["reused"]) == (0, first["rows"])
