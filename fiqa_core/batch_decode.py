"""Batched JPEG decoding on a device: decode -> resize short side -> centre crop, in torch.

The same code runs with ``device="cpu"`` (libjpeg-turbo through torchvision) and on a
CUDA GPU (nvJPEG, one call for the whole batch), so CI tests the path a GPU node runs.
Only baseline/progressive RGB or greyscale JPEGs without an EXIF rotation go this way;
everything else (other formats, CMYK, rotated, too large, anything whose header PIL cannot
read) and any image the batched call cannot decode takes the per-image PIL path of
:func:`fiqa_core.images.prepare_image`, so every status and error stays exactly as that
path reports it. One result per input, in order, always.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, OK, Decoded, prepare_image
from .transforms import crop_offsets, resized_size

if TYPE_CHECKING:
    import torch

_EXIF_ORIENTATION = 0x0112


MAX_ASPECT = 4.0  # longer strips resize to more than 4 S^2 pixels: the PIL path crops first


def device_eligible(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether ``data`` is a JPEG the batched decoder reproduces exactly as PIL would read
    it: complete (ends with EOI), RGB or greyscale, upright, within ``max_pixels``, and no
    longer than ``MAX_ASPECT`` times its width (the batched path resizes whole images)."""
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            rotated = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
    except Exception:
        return False
    return (img.format == "JPEG" and img.mode in ("RGB", "L") and 0 < w * h <= max_pixels
            and max(w, h) <= MAX_ASPECT * min(w, h) and not rotated)


def resize_crop_tensor(img: torch.Tensor, size: int) -> torch.Tensor:
    """CHW uint8 -> S x S x 3 uint8: short side to ``size`` (bilinear, antialiased, as PIL
    resamples), then torchvision's centre crop. Stays on the tensor's device."""
    import torch

    _, h, w = img.shape
    new_w, new_h = resized_size(w, h, size)
    x = img.unsqueeze(0).float()
    if (new_h, new_w) != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
    top, left = crop_offsets(new_h, new_w, size, False, None)
    x = x[0, :, top : top + size, left : left + size]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def prepare_batch(
    datas: Sequence[bytes],
    size: int,
    device: str | torch.device = "cpu",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[torch.Tensor, list[Decoded]]:
    """Decode + resize + centre-crop encoded images, eligible JPEGs in one batched call.

    Returns:
        ``(pixels, results)``: an N x S x S x 3 uint8 tensor on ``device`` (zeros where
        an image was refused) and one :class:`Decoded` per input (``image`` left None;
        status, error, width and height as the PIL path reports them).
    """
    import torch

    device = torch.device(device)
    pixels = torch.zeros((len(datas), size, size, 3), dtype=torch.uint8, device=device)
    results: list[Decoded | None] = [None] * len(datas)
    for i, img in _decode_jpegs(datas, device, max_pixels).items():
        try:
            pixels[i] = resize_crop_tensor(img, size)
        except Exception:  # out of memory, a kernel limit: the PIL path below
            continue
        results[i] = Decoded(OK, None, None, int(img.shape[2]), int(img.shape[1]))
    for i, data in enumerate(datas):
        if results[i] is None:
            r = prepare_image(data, size, max_pixels=max_pixels)
            if r.ok:
                pixels[i] = torch.from_numpy(np.ascontiguousarray(r.image)).to(device)
            results[i] = Decoded(r.status, r.error, None, r.width, r.height)
    return pixels, results


def decode_photos(datas: Sequence[bytes], device: str | torch.device = "cpu",
                  max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> list[tuple[Decoded, torch.Tensor | None]]:
    """Decode encoded photos at full resolution onto ``device``: eligible JPEGs in one
    batched call (nvJPEG on a GPU), every other one by PIL on the host and then copied.

    Returns, per input in order, its :class:`Decoded` (``image`` left None; status, error,
    width and height as :func:`~fiqa_core.images.decode_image` reports them) and its 3 x H x
    W uint8 RGB tensor on ``device`` (None where the photo was refused).
    """
    import torch

    from .images import decode_image

    device = torch.device(device)
    decoded = _decode_jpegs(datas, device, max_pixels)
    out: list[tuple[Decoded, torch.Tensor | None]] = []
    for i, data in enumerate(datas):
        img = decoded.pop(i, None)
        if img is not None:
            out.append((Decoded(OK, None, None, int(img.shape[2]), int(img.shape[1])), img))
            continue
        d = decode_image(data, max_pixels)
        photo = None
        if d.ok:
            photo = torch.from_numpy(np.ascontiguousarray(d.image)).permute(2, 0, 1).to(device)
        out.append((Decoded(d.status, d.error, None, d.width, d.height), photo))
    return out


def _decode_jpegs(datas: Sequence[bytes], device: torch.device, max_pixels: int
                  ) -> dict[int, torch.Tensor]:
    """The eligible JPEGs among ``datas`` (:func:`device_eligible`) decoded in one batched
    call on ``device``: input position -> 3 x H x W uint8 RGB. One that the call cannot
    decode is left out (the caller's PIL path names what is wrong)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    batch = [i for i, d in enumerate(datas) if device_eligible(d, max_pixels)]
    if not batch:
        return {}
    encoded = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in batch]
    if device.type == "cuda":  # nvJPEG may reuse memory queued work still reads
        torch.cuda.current_stream(device).synchronize()
    try:
        out = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        return dict(zip(batch, out, strict=True))
    except Exception:  # one bad image fails the whole call: decode one by one
        decoded = {}
        for i, enc in zip(batch, encoded, strict=True):
            try:
                decoded[i] = decode_jpeg(enc, mode=ImageReadMode.RGB, device=device)
            except Exception:
                pass
        return decoded
