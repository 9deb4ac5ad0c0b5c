"""Face alignment: a similarity transform (least squares, no reflection) from the 5
detected landmarks (image-left eye, image-right eye, nose tip, image-left and image-right
mouth corners) to a template's, and the warp of the full-resolution image into the
template's square, batched in torch on any device.

Coordinates are continuous: pixel ``i`` spans ``[i, i + 1)``, its centre at ``i + 0.5``
(the detector's convention); the templates, published for OpenCV's integer pixel centres,
are shifted by half a pixel on loading. When the face is larger in the photo than in the
template, its region is first reduced with an antialiased (triangle) filter to the
template's scale, so a crop of a large photo does not alias.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .templates import NAMES, TEMPLATES, template  # noqa: F401  (re-exported)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity (rotation, uniform scale, translation) taking points ``src``
    (K x 2) nearest to ``dst`` in least squares (Umeyama's closed form, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = float((sig * sign).sum() / var) if var > 0 else 1.0
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def warp(image: torch.Tensor, matrix: np.ndarray, side: int) -> torch.Tensor:
    """``image`` (3 x H x W, uint8 or float 0..255, any device) warped by ``matrix``
    (image -> template) into a ``side`` x ``side`` float crop (3 x side x side; outside the
    image: 0). Only the face's region is converted to floats."""
    _, h, w = image.shape
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # template -> image
    corners = inv @ np.array([[0, side, 0, side], [0, 0, side, side], [1, 1, 1, 1]])
    x0, y0 = (max(0, int(np.floor(v.min())) - 2) for v in corners)
    x1, y1 = min(w, int(np.ceil(corners[0].max())) + 2), min(h, int(np.ceil(corners[1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return torch.zeros((3, side, side), device=image.device)
    crop = image[:, y0:y1, x0:x1]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    sx = sy = 1.0
    if scale < 1:  # reduce first: bilinear sampling alone would alias
        ch, cw = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
        sy, sx = ch / (y1 - y0), cw / (x1 - x0)
        crop = reduce(crop, (ch, cw))
    crop = crop.float()
    centres = torch.arange(side, dtype=torch.float64) + 0.5
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    a = torch.as_tensor(inv, dtype=torch.float64)
    x = (a[0, 0] * u + a[0, 1] * v + a[0, 2] - x0) * sx
    y = (a[1, 0] * u + a[1, 1] * v + a[1, 2] - y0) * sy
    grid = torch.stack([2 * x / crop.shape[2] - 1, 2 * y / crop.shape[1] - 1], dim=-1)
    grid = grid.to(device=image.device, dtype=crop.dtype)[None]
    return F.grid_sample(crop[None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


def reduce(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` (3 x H x W) reduced to ``size`` (h, w) with an antialiased (triangle)
    filter, as PIL reduces; uint8 stays uint8 on the CPU (no full-size float copy)."""
    if image.dtype != torch.uint8 or image.device.type != "cpu":
        image = image.float()
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0]


def rounded(x: torch.Tensor) -> torch.Tensor:
    """Float (0..255) -> uint8, rounded, on its device."""
    return x.round().clamp(0, 255).to(torch.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """3 x S x S float (0..255) -> S x S x 3 uint8 (rounded) on the host."""
    return rounded(x).permute(1, 2, 0).cpu().numpy()
