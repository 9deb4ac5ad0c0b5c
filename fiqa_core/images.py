"""Decoding and preprocessing that survive whatever an image lake holds.

Every function here returns a :class:`Decoded` instead of raising for a bad image, so one
bad file never takes down a batch. Statuses (``Decoded.status``):

- ``ok``: decoded; ``image`` holds RGB uint8 pixels.
- ``empty``: zero bytes.
- ``not_image``: not a format we can identify (text, HTML error page, random bytes).
- ``truncated``: the file ends before the image data does (partial upload or copy).
- ``corrupt``: identified but the decoder failed (broken chunks, bad markers), or the
  file starts like an image (its magic number) but no decoder can read it (garbled).
- ``too_large``: more than ``max_pixels`` pixels (decompression bombs, absurd headers).
- ``unsupported``: a pixel format with no faithful RGB reading (e.g. 32-bit float).

How odd-but-valid images are read: EXIF orientation is applied; grayscale, palette,
CMYK, YCbCr and bilevel are converted to RGB; transparent pixels (alpha, palette
transparency) are composited onto white; 16-bit samples keep their 8 most
significant bits; animated images use their first frame.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .transforms import crop_array, crop_offsets, resize_crop, resize_short, resized_size

__all__ = [
    "DEFAULT_MAX_PIXELS", "STATUSES", "Decoded", "crop_array", "crop_offsets", "decode_image",
    "decode_resized", "prepare_image", "resize_crop", "resize_short", "resized_size",
    "stack_decoded", "to_rgb",
]

OK = "ok"
EMPTY = "empty"
NOT_IMAGE = "not_image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
TOO_LARGE = "too_large"
UNSUPPORTED = "unsupported"
STATUSES = (OK, EMPTY, NOT_IMAGE, TRUNCATED, CORRUPT, TOO_LARGE, UNSUPPORTED)

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any camera face crop, far below a bomb


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding one image.

    Attributes:
        status: ``ok`` or one of the refusal kinds listed in this module's docstring.
        error: Short human-readable reason when status is not ``ok``.
        image: HxWx3 uint8 RGB pixels when ok, else None.
        width: Width of the image as decoded (after EXIF rotation; reduced when a JPEG was
            decoded with ``draft``), when the header was readable.
        height: Height, likewise.
    """

    status: str
    error: str | None = None
    image: np.ndarray | None = None
    width: int | None = None
    height: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


class _Refused(Exception):
    def __init__(self, status: str, error: str, size: tuple[int, int] | None = None):
        super().__init__(error)
        self.status, self.error, self.size = status, error, size


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def format_by_signature(data: bytes) -> str | None:
    """The image format a file's first bytes announce (its magic number), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


def _open(data: bytes, max_pixels: int, draft_size: int | None) -> Image.Image:
    """Open, check size, optionally reduce JPEG decoding scale, decode, orient."""
    if len(data) == 0:
        raise _Refused(EMPTY, "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        kind = format_by_signature(data)
        if kind:  # it starts like an image, but its data cannot be read: garbled, not text
            raise _Refused(
                CORRUPT, f"garbled {kind}: no decoder could read it (starts {data[:8]!r})"
            ) from None
        raise _Refused(NOT_IMAGE, f"not a recognised image format (starts {data[:8]!r})") from None
    except Image.DecompressionBombError as e:
        raise _Refused(TOO_LARGE, f"decompression bomb: {e}") from None
    except Exception as e:
        kind = TRUNCATED if "runcated" in str(e) else CORRUPT
        raise _Refused(kind, f"unreadable header: {type(e).__name__}: {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise _Refused(TOO_LARGE, f"{w}x{h} = {w * h:,} pixels > limit {max_pixels:,}", (w, h))
    if draft_size and img.format == "JPEG":
        # Decode at the smallest DCT scale that keeps the short side >= draft_size.
        sw, sh = (draft_size, draft_size * h // w) if w <= h else (draft_size * w // h, draft_size)
        img.draft("RGB", (sw, sh))
    try:
        img.load()
    except OSError as e:
        kind = TRUNCATED if "runcated" in str(e) or "end of file" in str(e) else CORRUPT
        raise _Refused(kind, f"{type(e).__name__}: {e}", (w, h)) from None
    except Exception as e:  # SyntaxError (broken PNG), ValueError, struct errors...
        raise _Refused(CORRUPT, f"{type(e).__name__}: {e}", (w, h)) from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a malformed EXIF block is not a broken image: keep the stored orientation
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB as described in the module docstring."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise _Refused(UNSUPPORTED, "32-bit integer samples outside the 16-bit range")
        img = Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), mode="L")
        return img.convert("RGB")
    if mode == "F":
        raise _Refused(UNSUPPORTED, "32-bit float samples have no defined 8-bit reading")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as e:
        raise _Refused(UNSUPPORTED, f"cannot convert mode {mode} to RGB: {e}") from None


def _as_pil(data: bytes | np.ndarray | Image.Image, max_pixels: int, draft_size: int | None):
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, np.ndarray):
        if data.ndim == 2:
            data = np.repeat(data[:, :, None], 3, axis=2)
        if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise _Refused(
                UNSUPPORTED, f"arrays must be HxWx3 uint8, got {data.shape} {data.dtype}"
            )
        return Image.fromarray(data, mode="RGB")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _open(bytes(data), max_pixels, draft_size)
    raise TypeError(f"expected bytes, a numpy array or a PIL image, got {type(data).__name__}")


def _decode(data, max_pixels: int, draft_size: int | None, finish) -> Decoded:
    """Open ``data``, convert to RGB and apply ``finish`` (PIL image -> array); never raises."""
    img = None
    try:
        img = _as_pil(data, max_pixels, draft_size)
        rgb = to_rgb(img)
        if rgb.width < 1 or rgb.height < 1:
            raise _Refused(CORRUPT, f"empty image {rgb.width}x{rgb.height}")
        return Decoded(OK, None, finish(rgb), rgb.width, rgb.height)
    except _Refused as r:
        size = r.size or (img.size if img is not None else (None, None))
        return Decoded(r.status, r.error, None, *size)
    except Exception as e:  # a decoder bug must still become a result, not a crashed batch
        return Decoded(CORRUPT, f"{type(e).__name__}: {e}")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode encoded bytes to full-resolution RGB uint8. Never raises for bad data."""
    return _decode(data, max_pixels, None, np.array)


def prepare_image(
    data: bytes | np.ndarray | Image.Image,
    size: int,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = False,
) -> Decoded:
    """Decode (if bytes) and resize + crop to ``size`` x ``size`` RGB uint8. Never raises.

    Args:
        data: Encoded bytes, an HxWx3 uint8 array, or a PIL image.
        size: Output side S.
        train: Random crop (training) instead of centre crop (scoring).
        rng: Random generator for the crop; seeded by the caller for reproducibility.
        max_pixels: Refuse images with more pixels than this (``too_large``).
        draft: Let JPEG decoding use a reduced DCT scale whose short side stays >= S.
            Faster on large photos; slightly different pixels from an exact decode.
    """
    return _decode(
        data, max_pixels, size if draft else None, lambda img: resize_crop(img, size, train, rng)
    )


def stack_decoded(decoded, size: int) -> dict[str, np.ndarray]:
    """Prepared results as batch columns: ``pixels`` (N x S x S x 3 uint8, zeros where the
    image was refused), ``status``, ``error``, ``width`` and ``height``."""
    pixels = np.zeros((len(decoded), size, size, 3), dtype=np.uint8)
    for i, d in enumerate(decoded):
        if d.ok:
            pixels[i] = d.image
    column = lambda name: np.array([getattr(d, name) for d in decoded], dtype=object)  # noqa: E731
    return {
        "pixels": pixels,
        "status": column("status"),
        "error": column("error"),
        "width": column("width"),
        "height": column("height"),
    }



def decode_resized(
    data: bytes | np.ndarray | Image.Image,
    size: int,
    *,
    max_aspect: float = 3.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = False,
) -> Decoded:
    """Decode and resize the short side to ``size`` without cropping (see :func:`resize_short`).

    Training decodes each image once with this and crops the result every epoch.
    """
    return _decode(
        data, max_pixels, size if draft else None, lambda img: resize_short(img, size, max_aspect)
    )
