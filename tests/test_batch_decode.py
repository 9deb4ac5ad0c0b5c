"""The batched JPEG path (decode -> resize -> crop in torch) against the PIL path, on CPU:
the code a GPU node runs with device="cuda"."""

import numpy as np
import pytest

from fiqa_core.batch_decode import device_eligible, prepare_batch
from fiqa_core.images import prepare_image
from fiqa_core.metrics import srcc
from tests import imagegen


def test_pixels_match_the_pil_path_on_real_photographs(photos):
    datas = [imagegen.encode(p, "JPEG", quality=90) for p in photos]
    assert all(device_eligible(d) for d in datas)
    pixels, results = prepare_batch(datas, 96, "cpu")
    for d, px, r in zip(datas, pixels.numpy(), results, strict=True):
        ref = prepare_image(d, 96)
        assert (r.status, r.width, r.height) == ("ok", ref.width, ref.height)
        diff = np.abs(px.astype(int) - ref.image.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.2  # antialiased bilinear, rounding apart


def test_every_status_of_the_bad_file_zoo_is_unchanged():
    zoo = imagegen.zoo(imagegen.real_photos()[1][:60, :60])
    datas = [d for d, _ in zoo.values()]
    pixels, results = prepare_batch(datas, 32, "cpu")
    for (name, (data, expected)), r, px in zip(zoo.items(), results, pixels.numpy(),
                                               strict=True):
        ref = prepare_image(data, 32)
        assert (r.status, r.error, r.width, r.height) == (
            ref.status, ref.error, ref.width, ref.height), name
        assert r.status == expected, name
        if ref.ok:  # rotated, CMYK, PNG...: the PIL path's pixels exactly
            assert np.abs(px.astype(int) - ref.image.astype(int)).max() <= 1, name
        else:
            assert not px.any(), name
    # the ones the batched call must not take: rotated, CMYK, broken
    assert not device_eligible(zoo["exif_rotated_jpeg"][0])
    assert not device_eligible(zoo["cmyk_jpeg"][0])
    assert not device_eligible(zoo["truncated_jpeg"][0])


def test_a_batch_with_a_corrupt_and_a_cmyk_jpeg_falls_back_per_image(photos):
    zoo = imagegen.zoo(photos[1][:60, :60])
    good = [imagegen.encode(p, "JPEG", quality=90) for p in photos[:3]]
    # a JPEG that looks complete (SOI ... EOI) but whose entropy data is garbage: the
    # batched call raises for the whole batch, so every image is decoded on its own
    garbled = good[0][:200] + bytes(range(256)) * 8 + b"\xff\xd9"
    assert device_eligible(garbled)
    datas = [good[0], garbled, zoo["cmyk_jpeg"][0], good[1], good[2]]
    pixels, results = prepare_batch(datas, 64, "cpu")
    refs = [prepare_image(d, 64) for d in datas]
    assert [r.status for r in results] == [r.status for r in refs]
    assert [r.status for r in results][2] == "ok" and results[0].status == "ok"
    for px, ref in zip(pixels.numpy(), refs, strict=True):
        if ref.ok:
            assert np.abs(px.astype(int) - ref.image.astype(int)).max() <= 1


def test_scores_agree_with_the_pil_path(photos):
    torch = pytest.importorskip("torch")
    from fiqa_core import Scorer, create_model

    torch.manual_seed(0)
    scorer = Scorer(create_model("student-edgenext-xxs", image_size=96), device="cpu",
                    precision="fp32")
    rng = np.random.default_rng(0)
    datas = []
    for i in range(96):  # crops of the real photographs at varied sizes
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        datas.append(imagegen.encode(p[:ch, :cw], "JPEG", quality=90))
    pil = scorer.score(datas)["raw_score"]
    pixels, _ = prepare_batch(datas, 96, "cpu")
    batched = scorer.score_pixels(pixels)
    assert srcc(pil, batched) >= 0.999


def test_decode_tasks_defer_only_plain_jpegs(tmp_path, photos):
    """A deferred JPEG travels on as its bytes alone, a prepared image as its S x S x 3
    bytes, and the read stage's bytes go no further."""
    import pandas as pd
    import pyarrow as pa

    from jobs.score.pipeline import decode_batch, read_batch

    zoo = imagegen.zoo(photos[1][:60, :60])
    strip = imagegen.encode(np.zeros((200, 20, 3), np.uint8), "JPEG", quality=90)
    files = {"plain.jpg": zoo["jpeg"][0], "png.png": zoo["png"][0],
             "rotated.jpg": zoo["exif_rotated_jpeg"][0], "strip.jpg": strip}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    batch = pa.Table.from_pandas(pd.DataFrame(
        {"path": [str(tmp_path / n) for n in [*files, "gone.jpg"]], "size": 0, "mtime": 0.0,
         "etag": None, "bucket": 0}))  # etag all null: typed null, cast by the stage
    read = read_batch(batch, threads=2)
    assert read.schema.field("etag").type == pa.string()
    assert read.column("encoded").to_pylist()[:4] == list(files.values())
    assert read.column("status").to_pylist()[4] == "missing"
    out = decode_batch(read, 32, draft=False, max_pixels=10**8, defer_jpeg=True).to_pydict()
    # strip: too long for it; gone.jpg: its read's status
    assert out["status"] == ["deferred", "ok", "ok", "ok", "missing"]
    assert out["encoded"][0] == files["plain.jpg"] and set(out["encoded"][1:]) == {b""}
    assert out["pixels"][0] == b"" == out["pixels"][4]  # no pixel block where none is needed
    assert {len(p) for p in out["pixels"][1:4]} == {32 * 32 * 3}
    plain = decode_batch(read, 32, draft=False, max_pixels=10**8).to_pydict()
    assert set(plain["encoded"]) == {b""} and plain["status"] == ["ok"] * 4 + ["missing"]
    assert plain["pixels"][1:4] == out["pixels"][1:4]
