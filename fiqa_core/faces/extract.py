"""Detect and align: photos -> per photo the aligned crops of its faces (``largest``: the
largest one, ``all``: every one, largest first), each with its box, confidence and
landmarks; a photo without a face gets none (a ``no_face`` row for the caller)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fiqa_core.images import Decoded

from .align import rounded, similarity, template, to_uint8, warp
from .detect import Detector, Faces

MODES = ("none", "largest", "all")
NO_FACE = "no_face"  # a row's status: the photo decoded, no face in it


@dataclass
class Crop:
    """One aligned face of a photo: ``face`` its index (0 = the largest), ``box`` (x1, y1,
    x2, y2), ``score``, ``landmarks`` (5 x 2) in the photo's pixels, ``pixels`` the aligned
    crop: S x S x 3 uint8 on the host, or (``on_host=False``) a 3 x S x S uint8 tensor on
    the photo's device."""

    face: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    pixels: np.ndarray | torch.Tensor


def align_faces(photo: torch.Tensor, faces: Faces, template_name: str, model_size: int,
                mode: str, on_host: bool = True) -> list[Crop]:
    """The aligned crops of ``faces`` of ``photo`` (3 x H x W, uint8 or float) for
    ``mode`` (``on_host=False``: left on the photo's device)."""
    count = len(faces) if mode == "all" else min(1, len(faces))
    return [Crop(k, faces.boxes[k], float(faces.scores[k]), faces.landmarks[k],
                 align_to(photo, faces.landmarks[k], template_name, model_size, on_host))
            for k in range(count)]


def align_to(photo: torch.Tensor, landmarks, template_name: str, model_size: int,
             on_host: bool = True) -> np.ndarray | torch.Tensor:
    """``photo`` (3 x H x W, uint8 or float) aligned by ``landmarks`` (5 x (x, y): a
    detection's, or a row's ``face_landmarks``): the template's S x S x 3 uint8 crop on
    the host, or (``on_host=False``) its 3 x S x S uint8 tensor on the photo's device."""
    side, points = template(template_name, model_size)
    matrix = similarity(np.asarray(landmarks, np.float64).reshape(5, 2), points)
    crop = warp(photo, matrix, side)
    return to_uint8(crop) if on_host else rounded(crop)


def no_face(photo: Decoded, threshold: float, min_face: int) -> Decoded:
    """The row of a decoded photo in which no face passed the detector's settings."""
    return Decoded(NO_FACE, f"no face found (face_threshold {threshold}, min_face "
                   f"{min_face} px)", width=photo.width, height=photo.height)


def aligned_face(photo: Decoded, faces: dict, size: int, landmarks=None
                 ) -> tuple[np.ndarray | None, Decoded]:
    """One decoded photo's face, aligned to ``faces["template"]`` (at ``size`` for the
    ``model`` template): by ``landmarks`` (5 x (x, y), e.g. a pseudo-label row's) when they
    are 10 finite values, else by its largest face found (onnxruntime, one thread).

    Returns ``(crop, photo)``: the S x S x 3 uint8 crop, or None with the row's
    :class:`Decoded` (the photo's own status, or ``no_face``).
    """
    from .detect import as_tensor, cpu_detector

    if not photo.ok:
        return None, photo
    image = as_tensor(photo.image)
    known = np.size(landmarks) == 10 and np.isfinite(np.asarray(landmarks, float)).all()
    if not known:
        found = cpu_detector(faces["threshold"], faces["min_face"]).detect([image])[0]
        if not len(found):
            return None, no_face(photo, faces["threshold"], faces["min_face"])
        landmarks = found.landmarks[0]
    return align_to(image, landmarks, faces["template"], size), photo


def crops(detector: Detector, photos: list[torch.Tensor], template_name: str,
          model_size: int, mode: str) -> list[list[Crop]]:
    """Per photo (3 x H x W tensors, uint8 or float, on the detector's device:
    :func:`~fiqa_core.faces.detect.as_tensor`), its aligned faces."""
    if mode not in MODES[1:]:
        raise ValueError(f"faces={mode!r}: one of {', '.join(MODES[1:])} here")
    found = detector.detect(photos)
    return [align_faces(p, f, template_name, model_size, mode)
            for p, f in zip(photos, found, strict=True)]
