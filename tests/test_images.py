import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from fiqa_core.engines.torch_engine import normalize_batch
from fiqa_core.images import (
    STATUSES,
    decode_image,
    prepare_image,
    resize_crop,
)
from tests import imagegen


@pytest.fixture(scope="module")
def zoo(photos):
    return imagegen.zoo(photos[2])  # 300x451 cat photograph


def test_zoo_statuses(zoo):
    for name, (data, expected) in zoo.items():
        d = decode_image(data)
        assert d.status == expected, f"{name}: {d.status} ({d.error})"
        assert d.status in STATUSES
        if expected == "ok":
            assert d.error is None and d.image.dtype == np.uint8 and d.image.ndim == 3
            assert d.image.shape[2] == 3
        else:
            assert d.image is None and d.error, name


def test_refusal_reasons_are_specific(zoo):
    assert decode_image(zoo["empty"][0]).error == "zero-byte file"
    assert "403 Forbidden" not in decode_image(zoo["text"][0]).error  # short, not the whole body
    assert "not a recognised image format" in decode_image(zoo["text"][0]).error
    assert "10,000,000,000" in decode_image(zoo["bomb_png"][0]).error or "10000000000" in (
        decode_image(zoo["bomb_png"][0]).error
    )
    assert "float" in decode_image(zoo["float_tiff"][0]).error


def test_own_pixel_limit(photos):
    data = imagegen.encode(photos[0], "PNG")  # 512x512
    d = decode_image(data, max_pixels=512 * 512 - 1)
    assert d.status == "too_large" and "262,144 pixels" in d.error
    assert (d.width, d.height) == (512, 512)
    assert decode_image(data, max_pixels=512 * 512).status == "ok"


def test_odd_files_decode_to_the_right_pixels(zoo, photos):
    rgb = photos[2].astype(int)
    grey = np.asarray(Image.fromarray(photos[2]).convert("L")).astype(int)
    png = decode_image(zoo["png"][0]).image.astype(int)
    np.testing.assert_array_equal(png, rgb)
    # 16-bit samples keep their high byte: v * 257 >> 8 == v
    np.testing.assert_array_equal(decode_image(zoo["rgb16_png"][0]).image, rgb)
    np.testing.assert_array_equal(decode_image(zoo["grey16_png"][0]).image[..., 1], grey)
    # EXIF orientation 6: stored landscape, shown rotated 90 degrees clockwise
    rotated = decode_image(zoo["exif_rotated_jpeg"][0]).image.astype(int)
    assert rotated.shape == (451, 300, 3)
    assert np.abs(rotated - np.rot90(rgb, k=-1)).mean() < 3
    # alpha 128 over white
    over_white = (rgb * 128 + 255 * 127 + 127) // 255
    assert np.abs(decode_image(zoo["rgba_png"][0]).image.astype(int) - over_white).max() <= 1
    # CMYK and progressive JPEG are close to the source (JPEG loss only)
    for name in ("cmyk_jpeg", "jpeg_progressive", "webp"):
        assert np.abs(decode_image(zoo[name][0]).image.astype(int) - rgb).mean() < 6, name
    # grey stays grey in all three channels
    g = decode_image(zoo["grey_png"][0]).image
    assert (g[..., 0] == g[..., 2]).all()


@pytest.mark.parametrize("size", [352, 64, 100])
def test_resize_crop_matches_torchvision(photos, size):
    for arr in photos:
        img = Image.fromarray(arr)
        ref = np.asarray(T.CenterCrop(size)(T.Resize(size)(img))).astype(int)
        got = resize_crop(img, size).astype(int)
        assert got.shape == (size, size, 3)
        diff = np.abs(ref - got)
        # identical but for rare rounding of a resampling coefficient: at most 1 level
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_random_crop_is_seeded_and_inside_the_resized_image(photos):
    img = Image.fromarray(photos[3])  # 400x600 -> 64x96
    a = resize_crop(img, 64, train=True, rng=np.random.default_rng(3))
    b = resize_crop(img, 64, train=True, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    full = np.asarray(T.Resize(64)(img)).astype(int)
    crops = {
        resize_crop(img, 64, train=True, rng=np.random.default_rng(s)).tobytes() for s in range(8)
    }
    assert len(crops) > 1
    # every random crop is one of the windows of the resized image
    for s in range(4):
        c = resize_crop(img, 64, train=True, rng=np.random.default_rng(s)).astype(int)
        errs = [np.abs(full[:, x : x + 64] - c).max() for x in range(full.shape[1] - 63)]
        assert min(errs) <= 1


def test_extreme_aspect_ratio_is_cheap_and_exact():
    strip = np.random.default_rng(0).integers(0, 255, (3, 6000, 3), dtype=np.uint8)
    d = prepare_image(imagegen.encode(strip, "PNG"), 64)
    assert d.ok and d.image.shape == (64, 64, 3)


def test_prepare_accepts_arrays_and_bytes_alike(photos):
    arr = photos[1]
    from_bytes = prepare_image(imagegen.encode(arr, "PNG"), 96).image
    from_array = prepare_image(arr, 96).image
    np.testing.assert_array_equal(from_bytes, from_array)
    bad = prepare_image(np.zeros((4, 4), np.float32), 96)
    assert bad.status == "unsupported" and "uint8" in bad.error


def test_draft_decoding_is_close_to_exact(photos):
    big = np.asarray(Image.fromarray(photos[0]).resize((2048, 2048)))
    data = imagegen.encode(big, "JPEG", quality=95)
    exact = prepare_image(data, 300).image.astype(int)
    fast = prepare_image(data, 300, draft=True)
    assert fast.ok and fast.width == 512  # decoded at 1/4 scale: short side stays >= 300
    assert np.abs(exact - fast.image.astype(int)).mean() < 3


def test_normalize_batch_equals_to_tensor_normalize(photos):
    crop = resize_crop(Image.fromarray(photos[0]), 64)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = T.Normalize(mean, std)(T.ToTensor()(Image.fromarray(crop)))
    got = normalize_batch(crop[None], mean, std)
    assert got.shape == (1, 3, 64, 64)
    assert np.allclose(got[0].numpy(), ref.numpy(), atol=1e-6)
