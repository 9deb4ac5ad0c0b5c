"""faces=largest in fiqa train: labeled photos are aligned by their largest face before
training (a photo without one is left out, status no_face), pseudo-label rows written with
faces= by their own landmarks (two faces of one photo: two training rows); a faces= shard
is refused when training on face crops."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fiqa_core import read_checkpoint_config
from fiqa_core.config import resolve_config
from fiqa_core.engines.torch_engine import Scorer
from fiqa_core.errors import ConfigError
from fiqa_core.evaluation import evaluate_checkpoint, face_settings
from fiqa_core.faces import Detector, align_to, as_tensor
from fiqa_core.images import decode_image, decode_resized
from fiqa_core.tables import TableError, check_shard_schema
from jobs import evaluate as evaluate_job
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
    _evaluated_as_trained(tmp_path, cfg.output, expected)


def _evaluated_as_trained(tmp_path, model, face3):
    """fiqa evaluate on the labeled photos: by default (auto) each is aligned by its largest
    face as in training, the face-free ones unscorable; faces=none scores the whole photos."""
    out = tmp_path / "preds.parquet"
    assert evaluate_job.main(evaluate_job.get_args_parser().parse_args(
        [f"model={model}", f"labels={tmp_path / 'labels.csv'}", f"output={out}"])) == 0
    pred = pd.read_parquet(out).set_index("path")
    assert len(pred) == len(PLACES) + len(imagegen.FACE_FREE)
    free = pred.index.str.rsplit("/", n=1).str[-1].str[:-4].isin(imagegen.FACE_FREE)
    assert set(pred[free]["status"]) == {"no_face"} and pred[free]["score"].isna().all()
    assert set(pred[~free]["status"]) == {"ok"}
    scorer = Scorer.from_checkpoint(model)
    alone = scorer.score_decoded([scorer.prepare(face3)])["raw_score"][0]
    path = str(tmp_path / "images" / "face3.jpg")
    assert pred.loc[path, "raw_score"] == pytest.approx(alone, abs=1e-5)

    result, whole = evaluate_checkpoint(model, str(tmp_path / "labels.csv"), faces="none")
    assert result["faces"] is None and set(whole["status"]) == {"ok"}
    assert result["metrics"]["unscorable"] == 0
    whole = whole.set_index("path")
    assert whole.loc[path, "raw_score"] != pytest.approx(alone, abs=1e-5)
    largest, _ = evaluate_checkpoint(model, str(tmp_path / "labels.csv"), faces="largest")
    assert largest["faces"] == {"template": "model", "threshold": 0.9, "min_face": 16}
    assert largest["metrics"]["unscorable"] == len(imagegen.FACE_FREE)


def test_evaluate_face_settings_follow_the_lineage_or_the_detector_defaults():
    trained = {"faces": {"faces": "largest", "template": "ofiq616", "threshold": 0.7,
                         "min_face": 30}}
    assert face_settings(trained) == {"template": "ofiq616", "threshold": 0.7, "min_face": 30}
    assert face_settings(trained, "none") is None
    assert face_settings({}) is None  # trained on face crops
    assert face_settings({}, "largest") == {"template": "model", "threshold": 0.9,
                                            "min_face": 16}
    with pytest.raises(ConfigError, match="faces='all': one of auto, none, largest"):
        face_settings({}, "all")


def test_a_faces_shard_from_before_success_said_so_is_known_by_its_rows(tmp_path):
    shard = tmp_path / "old"
    _faces_shard(shard, str(_photos(tmp_path) / "two.jpg"))
    (shard / "_SUCCESS").write_text(json.dumps({"rows": 2}))  # no "faces" key
    with pytest.raises(TableError, match="pseudo-labeled with faces=largest or all"):
        check_shard_schema(str(shard))
    check_shard_schema(str(shard), faces="largest")  # accepted when training on faces


def test_a_round_on_photos_gives_every_role_its_face_settings(monkeypatch):
    from jobs import self_train
    from jobs.self_train import stages

    monkeypatch.setattr(stages, "_file_facts",
                        lambda uri: {"size": 1234, "mtime": 1700000000.0, "etag": None})
    base = ["labels=s3://b/labels.csv", "unlabeled_a=s3://b/a/", "unlabeled_b=s3://b/b/",
            "output=s3://b/round"]
    plain = self_train.stage_keys(resolve_config(self_train.RoundConfig, None, base))
    cfg = resolve_config(self_train.RoundConfig, None, [
        *base, "faces=all", "face_template=ofiq616", "min_face=24",
        "student.face_threshold=0.8", "pseudo_label.faces=largest"])
    jobs = self_train.stage_jobs(cfg)
    faces = {name: (job.faces, job.face_template, job.min_face, job.face_threshold)
             for name, job in jobs.items()}
    assert faces == {"teacher0": ("largest", "ofiq616", 24, 0.9),
                     "pseudo_a": ("largest", "ofiq616", 24, 0.9),  # the role's own wins
                     "teacher1": ("largest", "ofiq616", 24, 0.9),
                     "pseudo_b": ("largest", "ofiq616", 24, 0.9),
                     "student": ("largest", "ofiq616", 24, 0.8)}
    keys = self_train.stage_keys(cfg)
    assert keys["holdout"] == plain["holdout"]
    assert all(keys[s] != plain[s] for s in self_train.STAGES if s != "holdout")
    every = self_train.stage_jobs(replace(cfg, pseudo_label={}))
    assert every["pseudo_a"].faces == every["pseudo_b"].faces == "all"

    stray = resolve_config(self_train.RoundConfig, None, [*base, "face_template=ofiq616"])
    with pytest.raises(ConfigError, match="face_template set but faces=none: set the round's "
                                          "faces=largest or faces=all"):
        self_train.stage_keys(stray)
