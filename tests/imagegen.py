"""Test images: real sample photographs and a zoo of odd and broken files, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def real_photos() -> list[np.ndarray]:
    """Colour photographs of different sizes and shapes from scikit-image's bundled data."""
    import skimage.data as data

    astronaut = data.astronaut()  # 512x512, a face
    return [
        astronaut,
        astronaut[40:260, 150:330],  # the face, portrait crop
        data.chelsea(),  # 300x451
        data.coffee(),  # 400x600
        np.stack([data.camera()] * 3, axis=-1)[::2, ::2],  # grey as RGB, 256x256
        data.rocket(),  # 427x640
    ]


def encode(arr_or_img, fmt: str, **kwargs) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_rgb16(arr16: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (PIL cannot write one), built chunk by chunk."""
    h, w, _ = arr16.shape
    rows = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims an absurd size (a decompression bomb's signature)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def jpeg_with_corrupt_exif(arr: np.ndarray) -> bytes:
    """A JPEG whose EXIF block is cut short: it decodes, and Pillow warns ("Corrupt EXIF
    data"), as it does for many cameras' files."""
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    return encode(arr, "JPEG", exif=exif.tobytes()[:20])


def zoo(photo: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected status). Odd-but-valid files must decode as ``ok``."""
    rgb = photo
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette_t = palette.copy()
    palette_t.info["transparency"] = 0
    good_jpeg = encode(rgb, "JPEG", quality=90)
    good_png = encode(rgb, "PNG")
    corrupt_png = bytearray(good_png)
    corrupt_png[100:400] = bytes(300)  # zeroed IDAT bytes: zlib stream error
    anim = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    gif = io.BytesIO()
    anim[0].save(gif, format="GIF", save_all=True, append_images=anim[1:])
    return {
        "jpeg": (good_jpeg, "ok"),
        "jpeg_progressive": (encode(rgb, "JPEG", quality=90, progressive=True), "ok"),
        "png": (good_png, "ok"),
        "webp": (encode(rgb, "WEBP", quality=90), "ok"),
        "bmp": (encode(rgb, "BMP"), "ok"),
        "tiff": (encode(rgb, "TIFF"), "ok"),
        "gif_animated": (gif.getvalue(), "ok"),
        "grey_jpeg": (encode(grey, "JPEG"), "ok"),
        "grey_png": (encode(grey, "PNG"), "ok"),
        "bilevel_png": (encode(Image.fromarray(grey).convert("1"), "PNG"), "ok"),
        "palette_png": (encode(palette, "PNG"), "ok"),
        "palette_transparent_png": (encode(palette_t, "PNG"), "ok"),
        "rgba_png": (encode(rgba, "PNG"), "ok"),
        "la_png": (encode(Image.fromarray(rgba).convert("LA"), "PNG"), "ok"),
        "cmyk_jpeg": (encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok"),
        "grey16_png": (encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), "ok"),
        "rgb16_png": (png_rgb16(rgb.astype(np.uint16) * 257), "ok"),
        "exif_rotated_jpeg": (jpeg_with_orientation(rgb, 6), "ok"),
        "float_tiff": (encode(Image.fromarray(grey.astype(np.float32)), "TIFF"), "unsupported"),
        "empty": (b"", "empty"),
        "text": (b"<html><body>403 Forbidden</body></html>", "not_image"),
        "random_bytes": (np.random.default_rng(1).bytes(5000), "not_image"),
        # a whole JPEG header segment, then garbage where the next marker should be
        "garbled_jpeg": (good_jpeg[:20] + np.random.default_rng(0).bytes(3000), "corrupt"),
        "garbled_png": (good_png[:8] + np.random.default_rng(3).bytes(500), "corrupt"),
        "truncated_jpeg": (good_jpeg[: len(good_jpeg) // 2], "truncated"),
        "truncated_png": (good_png[: len(good_png) // 2], "truncated"),
        "corrupt_png": (bytes(corrupt_png), "corrupt"),
        "header_only_jpeg": (good_jpeg[:200], "truncated"),
        "bomb_png": (png_bomb(), "too_large"),
    }


def brightness_label(factor: float) -> float:
    """The known label of a generated image: linear in its brightness factor (1..5)."""
    return 1.0 + 4.0 * factor


def write_labeled_set(
    folder, n: int, seed: int = 0, size: tuple[int, int] = (80, 96), fmt: str = "JPEG"
) -> list[tuple[str, float]]:
    """Write ``n`` images whose label is a known function of content (brightness).

    Each image is a random crop of a real photograph, scaled by a brightness factor in
    [0.15, 1]; returns (file name, label) pairs.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = real_photos()
    rows = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = size
        top = int(rng.integers(0, photo.shape[0] - h))
        left = int(rng.integers(0, photo.shape[1] - w))
        factor = float(rng.uniform(0.15, 1.0))
        img = (photo[top : top + h, left : left + w].astype(np.float32) * factor).astype(np.uint8)
        name = f"img_{i:04d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        (folder / name).write_bytes(encode(img, fmt, **({"quality": 92} if fmt == "JPEG" else {})))
        rows.append((name, brightness_label(factor)))
    return rows


# Faces in larger photographs, for the face detector: a region of scikit-image's photographs
# around a face, with the face's box placed by hand (x1, y1, x2, y2 in the region), pasted
# into face-free scenes at several scales and positions.
FACE_REGIONS = {  # photo: (region x1, y1, x2, y2 in the photo, the face's box in the region)
    "astronaut": ((120, 0, 330, 250), (58, 62, 152, 172)),
    "camera": ((150, 60, 300, 230), (46, 45, 104, 128)),
}
FACE_FREE = ("chelsea", "rocket", "coffee")


def skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def face_scene(size: tuple[int, int], faces: list[tuple[str, float, tuple[int, int]]],
               background: str = "coffee") -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """A ``size`` (width, height) scene: ``background`` stretched, then each (photo, scale,
    (x, y)) face region pasted at (x, y) scaled by ``scale``; the scene and the faces'
    boxes in it."""
    scene = Image.fromarray(skimage_photo(background)).resize(size, Image.BILINEAR)
    boxes = []
    for name, scale, (x, y) in faces:
        (rx1, ry1, rx2, ry2), (fx1, fy1, fx2, fy2) = FACE_REGIONS[name]
        region = Image.fromarray(skimage_photo(name)).crop((rx1, ry1, rx2, ry2))
        region = region.resize((round((rx2 - rx1) * scale), round((ry2 - ry1) * scale)),
                               Image.BILINEAR)
        scene.paste(region, (x, y))
        boxes.append((x + fx1 * scale, y + fy1 * scale, x + fx2 * scale, y + fy2 * scale))
    return np.asarray(scene), boxes
