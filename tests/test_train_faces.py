"""faces=largest in fiqa train: labeled photos are aligned by their largest face before
training (a photo without one is left out, status no_face), pseudo-label rows written with
faces= by their own landmarks (two faces of one photo: two training rows); a faces= shard
is refused when training on face crops."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fiqa_core import read_checkpoint_config
from fiqa_core.faces import Detector, align_to, as_tensor
from fiqa_core.images import decode_image, decode_resized
from fiqa_core.tables import TableError, check_shard_schema
from jobs import train as train_job
from tests import imagegen
from tests.test_train import config

PLACES = [(40, 30), (300, 120), (520, 260), (150, 300), (420, 40), (60, 200), (560, 20),
          (250, 280)]


def _photos(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, (x, y) in enumerate(PLACES):  # a face each, at a known place
        img, _ = imagegen.face_scene((800, 600), [("astronaut", 0.8 + 0.1 * i, (x, y))])
        (images / f"face{i}.jpg").write_bytes(imagegen.encode(img, "JPEG"))
        rows.append((f"images/face{i}.jpg", 1.0 + i / 2))
    for name in imagegen.FACE_FREE:
        (images / f"{name}.jpg").write_bytes(imagegen.encode(imagegen.skimage_photo(name),
                                                             "JPEG"))
        rows.append((f"images/{name}.jpg", 3.0))
    pd.DataFrame(rows, columns=["path", "score"]).assign(
        split=["train"] * 4 + ["val"] * 4 + ["train"] * len(imagegen.FACE_FREE)).to_csv(
        tmp_path / "labels.csv", index=False)
    two, _ = imagegen.face_scene((1200, 800), [("astronaut", 1.5, (80, 100)),
                                                ("camera", 1.2, (800, 400))])
    (images / "two.jpg").write_bytes(imagegen.encode(two, "JPEG"))
    return images


def _faces_shard(folder, photo: str) -> np.ndarray:
    """A pseudo-label output as faces=all writes it: a row per face of one photo."""
    found = Detector(backend="onnxruntime").detect([as_tensor(decode_image(
        open(photo, "rb").read()).image)])[0]
    folder.mkdir()
    pq.write_table(pa.table({
        "path": [photo] * len(found), "score": [2.0, 4.0][:len(found)],
        "raw_score": [0.0] * len(found), "model": ["t"] * len(found),
        "status": ["ok"] * len(found), "error": [None] * len(found),
        "face": list(range(len(found))), "face_count": [len(found)] * len(found),
        "face_landmarks": [lm.astype(float).ravel().tolist() for lm in found.landmarks]}),
        folder / "part-0.parquet")
    (folder / "_SUCCESS").write_text(json.dumps({"faces": "all", "rows": len(found)}))
    return found.landmarks


def test_training_on_faces_in_photos(tmp_path, ray_local):
    images = _photos(tmp_path)
    landmarks = _faces_shard(tmp_path / "pseudo", str(images / "two.jpg"))
    assert len(landmarks) == 2
    with pytest.raises(TableError, match="pseudo-labeled with faces=all"):
        check_shard_schema(str(tmp_path / "pseudo"))  # faces=none: refused, before work

    cfg = config(tmp_path, "epochs=1", "num_workers=1", "batch_size=4", "faces=largest",
                 f"pseudo_labels=[{tmp_path / 'pseudo'}]")
    final = train_job.run(cfg)
    assert final.lineage["faces"] == {"faces": "largest", "template": "model",
                                      "threshold": 0.9, "min_face": 16}
    assert final.lineage["rows"] == {"0": len(PLACES), "1": 2}  # face-free photos left out
    assert read_checkpoint_config(cfg.output).id == final.id
    (cache,) = (tmp_path / "model.work").glob("cache-64px-*")
    rows = pq.read_table(cache / "data").to_pandas()
    bad = rows[rows["status"] != "ok"]
    assert sorted(bad["path"].str.rsplit("/", n=1).str[-1]) == sorted(
        f"{n}.jpg" for n in imagegen.FACE_FREE)
    assert set(bad["status"]) == {"no_face"} and bad["error"].str.contains("no face").all()

    def cached(path, k=0):
        r = rows[rows["path"] == path].sort_values("score").iloc[k]
        return np.frombuffer(r["pixels"], np.uint8).reshape(r["height"], r["width"], 3)

    # a labeled photo: its largest face, aligned at the model's size (not the photo resized)
    path = str(images / "face3.jpg")
    photo = decode_image(open(path, "rb").read()).image
    (face,) = Detector(backend="onnxruntime").detect([as_tensor(photo)])[0].landmarks[:1]
    expected = decode_resized(align_to(as_tensor(photo), face, "model", 64), 64).image
    assert np.array_equal(cached(path), expected)
    assert not np.array_equal(cached(path), decode_resized(photo, 64).image)
    # the pseudo rows: each its own face of one photo, by its landmarks
    two = decode_image((images / "two.jpg").read_bytes()).image
    for k in range(2):
        assert np.array_equal(cached(str(images / "two.jpg"), k), decode_resized(
            align_to(as_tensor(two), landmarks[k], "model", 64), 64).image)


def test_a_faces_shard_from_before_success_said_so_is_known_by_its_rows(tmp_path):
    shard = tmp_path / "old"
    _faces_shard(shard, str(_photos(tmp_path) / "two.jpg"))
    (shard / "_SUCCESS").write_text(json.dumps({"rows": 2}))  # no "faces" key
    with pytest.raises(TableError, match="pseudo-labeled with faces=largest or all"):
        check_shard_schema(str(shard))
    check_shard_schema(str(shard), faces="largest")  # accepted when training on faces
