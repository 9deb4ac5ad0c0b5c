"""faces=largest and faces=all in fiqa score, over a lake of photographs (faces pasted into
scenes at known places, face-free photographs, broken files): one row per photo (per face)
with its face's box, landmarks and confidence, no_face rows, the bad files' statuses, reuse
keyed on the face settings, and a photo whose face rows were cut short scored again."""

import base64
import html
import io
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fiqa_core.tables import TableError, check_shard_schema
from jobs import report
from jobs import score as score_job
from jobs.report import page as page_module
from tests import imagegen
from tests.test_faces import iou
from tests.test_score import cfg, checkpoint, read_partition  # noqa: F401  (fixture)

SCENES = {
    "one.jpg": ((800, 600), [("astronaut", 1.0, (420, 200))]),
    "two.jpg": ((1600, 1000), [("astronaut", 1.8, (100, 150)), ("camera", 2.0, (1100, 500))]),
    "small.png": ((640, 480), [("camera", 1.0, (300, 200))]),
    "three.jpg": ((900, 600), [("astronaut", 0.6, (60, 80)), ("camera", 0.8, (400, 300)),
                               ("astronaut", 0.8, (650, 200))]),
}


def make_photo_lake(root):
    placed = {}
    for name, (size, faces) in SCENES.items():
        img, boxes = imagegen.face_scene(size, faces)
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        (root / name).write_bytes(imagegen.encode(img, fmt))
        placed[str(root / name)] = boxes
    for name in imagegen.FACE_FREE:
        (root / f"{name}.jpg").write_bytes(imagegen.encode(imagegen.skimage_photo(name), "JPEG"))
    broken = {}
    for name, (data, status) in imagegen.zoo(imagegen.real_photos()[1][:60, :60]).items():
        if status != "ok":
            (root / f"zoo_{name}.jpg").write_bytes(data)
            broken[str(root / f"zoo_{name}.jpg")] = status
    return placed, broken


def test_a_night_scores_the_largest_face_of_each_photo(tmp_path, checkpoint, ray_local):  # noqa: F811
    lake, out = tmp_path / "lake", tmp_path / "scores"
    lake.mkdir()
    placed, broken = make_photo_lake(lake)
    first = score_job.run(cfg(input=lake, model=checkpoint, output=out,
                              run_date="2026-12-01", faces="largest"))
    rows = read_partition(str(out / "date=2026-12-01")).set_index("path")
    images = len(placed) + len(imagegen.FACE_FREE) + len(broken)
    assert len(rows) == rows.index.nunique() == images == first["images"]
    for path, boxes in placed.items():  # the largest placed face, found where it was put
        r = rows.loc[path]
        assert r["status"] == "ok" and np.isfinite(r["score"]) and r["face"] == 0
        largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        assert iou(largest, list(r["face_box"])) >= 0.5, (path, r["face_box"], largest)
        pts = np.asarray(r["face_landmarks"]).reshape(5, 2)
        x1, y1, x2, y2 = r["face_box"]
        assert ((pts[:, 0] >= x1) & (pts[:, 0] <= x2) & (pts[:, 1] >= y1)
                & (pts[:, 1] <= y2)).all() and r["face_score"] > 0.9
    for name in imagegen.FACE_FREE:
        r = rows.loc[str(lake / f"{name}.jpg")]
        assert r["status"] == "no_face" and np.isnan(r["score"]) and "no face" in r["error"]
        assert r["face_box"] is None and r["width"] > 0
    assert {p: rows.at[p, "status"] for p in broken} == broken  # bad files keep theirs
    marker = json.loads((out / "date=2026-12-01" / "_SUCCESS").read_text())
    assert marker["by_status"]["no_face"] == len(imagegen.FACE_FREE)
    assert marker["by_status"]["ok"] == len(placed)

    again = score_job.run(cfg(input=lake, model=checkpoint, output=out,
                              run_date="2026-12-02", faces="largest"))
    assert (again["scored"], again["reused"]) == (0, images)
    kept = read_partition(str(out / "date=2026-12-02")).set_index("path")
    for path in placed:  # the face columns are carried with the score
        assert list(kept.at[path, "face_box"]) == list(rows.at[path, "face_box"])
    other = score_job.run(cfg(input=lake, model=checkpoint, output=out,
                              run_date="2026-12-03", faces="largest",
                              face_template="arcface112"))
    assert other["reused"] == 0 and other["pipeline"] != first["pipeline"]


def _report_names_faces(night, rows):
    """The night's report: its gallery rows are faces, by path, index and box, each
    thumbnail the face's own region of the photo."""
    data = json.loads((night / report.JSON).read_text())
    ok = rows[rows["status"] == "ok"]
    assert [f["score"] for f in data["worst"]] == pytest.approx(sorted(ok["score"])[:12])
    for f in data["worst"] + data["best"]:
        (r,) = ok[(ok["path"] == f["path"]) & (ok["face"] == f["face"])].itertuples()
        assert f["face_box"] == list(r.face_box) and f["score"] == pytest.approx(r.score)
    page = (night / report.HTML).read_text()
    assert html.escape(f"{data['worst'][0]['path']} (face "
                       f"{data['worst'][0]['face']})") in page
    thumbs = [base64.b64decode(t) for t in re.findall(r'src="data:image/jpeg;base64,([^"]*)"',
                                                       page)]
    assert len(thumbs) == 2 * len(ok)
    for f, thumb in zip(data["worst"], thumbs, strict=False):
        with Image.open(f["path"]) as photo:
            expected = photo.crop(page_module._around(f["face_box"], photo.size))
        expected.thumbnail((page_module.THUMB, page_module.THUMB))
        assert Image.open(io.BytesIO(thumb)).size == expected.size


def _faces_of(rows, path):
    return rows[rows["path"] == path].sort_values("face")


def test_faces_all_writes_a_row_per_face_and_resumes_a_photo_cut_short(
        tmp_path, checkpoint, ray_local):  # noqa: F811
    lake, out = tmp_path / "lake", tmp_path / "scores"
    lake.mkdir()
    placed, broken = make_photo_lake(lake)
    first = score_job.run(cfg(input=lake, model=checkpoint, output=out,
                              run_date="2026-12-01", faces="all", report="true"))
    night = out / "date=2026-12-01"
    rows = read_partition(str(night))
    faces = sum(len(b) for b in placed.values())
    images = len(placed) + len(imagegen.FACE_FREE) + len(broken)
    assert rows["path"].nunique() == images == first["images"]
    assert len(rows) == faces + images - len(placed) == first["rows"]
    assert first["face_rows"] == faces and first["faces"] == "all"
    for path, boxes in placed.items():  # each placed face once, largest first
        mine = _faces_of(rows, path)
        assert list(mine["face"]) == list(range(len(boxes)))
        assert set(mine["face_count"]) == {len(boxes)} and (mine["status"] == "ok").all()
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in mine["face_box"]]
        assert areas == sorted(areas, reverse=True)
        for box in boxes:
            assert max(iou(box, list(b)) for b in mine["face_box"]) >= 0.5, (path, box)
        assert mine["score"].notna().all() and mine["score"].nunique() == len(boxes)
    for name in imagegen.FACE_FREE:  # one no_face row each, never a drop
        r = rows[rows["path"] == str(lake / f"{name}.jpg")]
        assert list(r["status"]) == ["no_face"] and r["face"].isna().all()
    assert dict(zip(rows["path"], rows["status"], strict=True)).items() >= broken.items()
    _report_names_faces(night, rows)

    # a run cut short between two writes: the three-face photo has only its face 0 row
    # (the scorer batches rows, not photos); the rerun scores it again and keeps one row
    # per face
    cut = tmp_path / "pseudo"
    three = str(lake / "three.jpg")
    shutil.copytree(night, cut, ignore=shutil.ignore_patterns("_*"))
    for f in cut.rglob("*.parquet"):
        t = pq.read_table(f)
        if three in set(t["path"].to_pylist()):
            kept = t.to_pandas()
            kept = kept[(kept["path"] != three) | (kept["face"] == 0)]
            pq.write_table(pa.Table.from_pandas(kept, schema=t.schema, preserve_index=False), f)
    resumed = score_job.run(cfg(input=lake, model=checkpoint, output=cut, faces="all"),
                            nightly=False)
    again = read_partition(str(cut))
    assert len(again) == len(rows) == resumed["rows"] and resumed["duplicate_rows"] == 0
    mine = _faces_of(again, three)
    assert list(mine["face"]) == [0, 1, 2]  # rescored whole: face 0 from the rerun too
    assert set(mine["scored_at"]) == {resumed["run_started"]}
    assert set(again.loc[again["path"] != three, "scored_at"]) == {first["run_started"]}
    with pytest.raises(TableError, match="pseudo-labeled with faces=all"):
        check_shard_schema(str(cut))  # fiqa train refuses it, before any work

    second = score_job.run(cfg(input=lake, model=checkpoint, output=out,
                               run_date="2026-12-02", faces="all"))
    assert (second["scored"], second["reused"]) == (0, len(rows))
    kept = read_partition(str(out / "date=2026-12-02"))
    for path in placed:  # every face carried, with its box and score
        a, b = _faces_of(kept, path), _faces_of(rows, path)
        assert list(a["score"]) == list(b["score"])
        assert [list(x) for x in a["face_box"]] == [list(x) for x in b["face_box"]]
