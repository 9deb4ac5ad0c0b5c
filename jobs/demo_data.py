"""Demo data: quality-labeled images made offline from real photographs.

Each image is a random crop of one of scikit-image's bundled photographs, degraded by
downscaling, Gaussian blur, Gaussian noise and JPEG compression, all at one severity
``s`` drawn uniformly from [0, 1]. Its label is the documented function of severity

    label = 5 - 4 * s        (5: pristine, 1: worst)

so any model's SRCC against it is meaningful. Half the files are stored as PNG (after
the JPEG step, so every format carries the same degradations). Everything is seeded:
the same call writes the same bytes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat", "camera")
CROP_SHORT_SIDE = (16, 22)  # pixels: small crops, as face crops in a lake often are
MAX_DOWNSCALE = 2.0  # severity 1 downsamples by this factor (then back up)
MAX_BLUR_RADIUS = 0.8
MAX_NOISE_SIGMA = 40.0  # on the 0..255 scale
JPEG_QUALITY = (90, 8)  # quality at severity 0 and at severity 1


def label_of(severity):
    """The label of an image degraded at ``severity`` in [0, 1] (a float or an array)."""
    return 5.0 - 4.0 * severity


def load_photos() -> list[np.ndarray]:
    """The bundled photographs as RGB uint8 arrays (scikit-image ships them; no download)."""
    from fiqa_core.extras import require

    require("skimage")
    import skimage.data

    out = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        out.append(np.ascontiguousarray(a[..., :3]).astype(np.uint8))
    return out


def degrade(photo: np.ndarray, severity: float, rng: np.random.Generator) -> Image.Image:
    """A random crop of ``photo``, degraded at ``severity`` by all four degradations."""
    short = int(rng.integers(CROP_SHORT_SIDE[0], CROP_SHORT_SIDE[1] + 1))
    aspect = rng.uniform(0.8, 1.25)
    w, h = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
    # a window up to 1.5x the output, shrunk: smooth enough that the degradations show
    zoom = rng.uniform(1.0, 1.5)
    cw, ch = min(photo.shape[1], int(w * zoom)), min(photo.shape[0], int(h * zoom))
    x0 = int(rng.integers(0, photo.shape[1] - cw + 1))
    y0 = int(rng.integers(0, photo.shape[0] - ch + 1))
    img = Image.fromarray(photo[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BICUBIC)
    factor = 1.0 + (MAX_DOWNSCALE - 1.0) * severity
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    img = img.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if severity > 0:
        img = img.filter(ImageFilter.GaussianBlur(MAX_BLUR_RADIUS * severity))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, MAX_NOISE_SIGMA * severity, (h, w, 3))
    img = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    quality = round(JPEG_QUALITY[0] + (JPEG_QUALITY[1] - JPEG_QUALITY[0]) * severity)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@dataclass(frozen=True)
class DemoSets:
    """Where :func:`write_demo_sets` put things (all local paths)."""

    root: str
    labels: str  # labeled.csv: path (relative to root), score
    test_labels: str  # test.csv: held-out labeled images
    unlabeled_a: str  # folder
    unlabeled_b: str  # folder
    truth: str  # truth.csv: the true label of every generated image, unlabeled ones too


def write_images(
    folder: str, n: int, seed: int, stream: int, photos: list[np.ndarray]
) -> list[tuple[str, float]]:
    """``n`` degraded images in ``folder`` (two subfolders); returns (file, label) pairs."""
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i])
        severity = float(rng.uniform(0, 1))
        img = degrade(photos[int(rng.integers(len(photos)))], severity, rng)
        ext = "png" if i % 2 else "jpg"
        name = f"part{i % 2}/img{i:05d}.{ext}"
        os.makedirs(os.path.join(folder, f"part{i % 2}"), exist_ok=True)
        if ext == "png":
            img.save(os.path.join(folder, name), format="PNG")
        else:
            img.save(os.path.join(folder, name), format="JPEG", quality=95)
        rows.append((name, float(label_of(severity))))
    return rows


def write_demo_sets(
    root: str, labeled: int, test: int, unlabeled_a: int, unlabeled_b: int, seed: int = 0
) -> DemoSets:
    """Write a labeled set, a held-out test set and two unlabeled sets under ``root``.

    Set A also holds a truncated JPEG and a text file named ``.jpg`` (they must come out
    as rows with a status, not crash a job); set B holds a README (a non-image, skipped).
    """
    root = os.path.abspath(root)
    photos = load_photos()
    truth = []

    def labeled_set(name: str, n: int, stream: int) -> str:
        rows = write_images(os.path.join(root, name), n, seed, stream, photos)
        table = pd.DataFrame(
            [(f"{name}/{f}", s) for f, s in rows], columns=["path", "score"]
        )
        table.to_csv(os.path.join(root, f"{name}.csv"), index=False)
        truth.extend((os.path.join(root, p), s) for p, s in table.itertuples(index=False))
        return os.path.join(root, f"{name}.csv")

    def unlabeled_set(name: str, n: int, stream: int) -> str:
        folder = os.path.join(root, name)
        rows = write_images(folder, n, seed, stream, photos)
        truth.extend((os.path.join(folder, f), s) for f, s in rows)
        return folder

    sets = DemoSets(
        root=root,
        labels=labeled_set("labeled", labeled, 1),
        test_labels=labeled_set("test", test, 2),
        unlabeled_a=unlabeled_set("set_a", unlabeled_a, 3),
        unlabeled_b=unlabeled_set("set_b", unlabeled_b, 4),
        truth=os.path.join(root, "truth.csv"),
    )
    whole = open(os.path.join(sets.unlabeled_a, "part0/img00000.jpg"), "rb").read()
    with open(os.path.join(sets.unlabeled_a, "truncated.jpg"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(os.path.join(sets.unlabeled_a, "not_image.jpg"), "w") as f:
        f.write("this is a text file with an image's name\n")
    with open(os.path.join(sets.unlabeled_b, "README.txt"), "w") as f:
        f.write("set B: unlabeled demo images\n")
    pd.DataFrame(truth, columns=["path", "score"]).to_csv(sets.truth, index=False)
    return sets
