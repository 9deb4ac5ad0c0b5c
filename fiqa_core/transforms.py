"""Resize and crop as torchvision does, resampling only the pixels that are kept (PIL)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size after resizing the short side to ``size`` (torchvision's rounding)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _resample(img: Image.Image, size: int, left: int, top: int, out_w: int, out_h: int):
    """Pixels [left, left+out_w) x [top, top+out_h) of the image resized short side -> size.

    Only that window is resampled (PIL's ``box``); the result equals resizing the whole
    image then slicing (to within one level, from coefficient rounding).
    """
    w, h = img.size
    new_w, new_h = resized_size(w, h, size)
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)
    return np.array(img.resize((out_w, out_h), Image.BILINEAR, box=box))  # writable copy


def crop_offsets(
    height: int, width: int, size: int, train: bool, rng: np.random.Generator | None
) -> tuple[int, int]:
    """(top, left) of a size x size crop: torchvision's CenterCrop or RandomCrop rule."""
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resize_crop(
    img: Image.Image, size: int, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Short side -> ``size`` (bilinear), then a ``size`` x ``size`` crop: centre or random.

    Matches ``Resize(size)`` + ``CenterCrop``/``RandomCrop`` on a PIL image, but only the
    cropped region is resampled, so a 1x10000 strip costs a crop, not a 352x3.5M image.
    """
    new_w, new_h = resized_size(*img.size, size)
    top, left = crop_offsets(new_h, new_w, size, train, rng)
    return _resample(img, size, left, top, size, size)


def resize_short(img: Image.Image, size: int, max_aspect: float = 3.0) -> np.ndarray:
    """Short side -> ``size``, long side capped at ``max_aspect * size`` (centre kept).

    What a training cache stores: any later centre or random crop is a cheap slice
    (:func:`crop_array`). The cap bounds memory for strips and panoramas; crops of images
    within the cap are unaffected.
    """
    new_w, new_h = resized_size(*img.size, size)
    cap = max(size, int(max_aspect * size))
    out_w, out_h = min(new_w, cap), min(new_h, cap)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return _resample(img, size, left, top, out_w, out_h)


def crop_array(
    arr: np.ndarray, size: int, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A size x size crop of an already resized HxWx3 array (centre or random)."""
    top, left = crop_offsets(arr.shape[0], arr.shape[1], size, train, rng)
    return arr[top : top + size, left : left + size]
