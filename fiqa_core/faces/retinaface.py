"""RetinaFace (mobilenet-0.25) in torch, its weights loaded from the shipped ONNX model's
initializers (:mod:`fiqa_core.faces.weights`), so detection runs batched on any torch
device; and the decoding of its outputs (anchors, boxes, 5 landmarks) shared by the torch
and the onnxruntime paths.

The layout is biubug6's (MIT) RetinaFace with its batch norms folded into the convolutions,
as exported: a MobileNet-0.25 body (outputs at strides 8, 16, 32), an FPN, an SSH context
module per level and 1x1 heads (2 anchors per cell: class, box, landmarks). Input: BGR
float, the per-channel mean (104, 117, 123) subtracted, any height and width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN_BGR = (104.0, 117.0, 123.0)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
SLOPE = 0.1  # LeakyReLU everywhere but the SSH outputs (ReLU)

# the body: (stage, in, out, stride) for each depthwise-separable block after stage1.0
BLOCKS = [("stage1", 8, 16, 1), ("stage1", 16, 32, 2), ("stage1", 32, 32, 1),
          ("stage1", 32, 64, 2), ("stage1", 64, 64, 1), ("stage2", 64, 128, 2),
          *[("stage2", 128, 128, 1)] * 5, ("stage3", 128, 256, 2), ("stage3", 256, 256, 1)]


class RetinaFace(nn.Module):
    """The detector network; ``forward(x)`` gives ``(loc, conf, landmarks)`` per anchor:
    box offsets (N, A, 4), face probability (N, A) and landmark offsets (N, A, 10)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict()
        self._add("fx.stage1.0.0", 3, 8, 3, stride=2)
        index = {"stage1": 1, "stage2": 0, "stage3": 0}
        self.body: list[tuple[str, str, str]] = []  # (stage, depthwise, pointwise) names
        for stage, cin, cout, stride in BLOCKS:
            k = index[stage]
            index[stage] += 1
            dw, pw = f"fx.{stage}.{k}.0.0", f"fx.{stage}.{k}.1.0"
            self._add(dw, cin, cin, 3, stride=stride, groups=cin)
            self._add(pw, cin, cout, 1)
            self.body.append((stage, dw, pw))
        for i, cin in enumerate((64, 128, 256), 1):
            self._add(f"fpn.output{i}.0", cin, 64, 1)
        for i in (1, 2):
            self._add(f"fpn.merge{i}.0", 64, 64, 3)
        for level in (1, 2, 3):
            s = f"ssh{level}"
            self._add(f"{s}.conv3X3.0", 64, 32, 3)
            self._add(f"{s}.conv5X5_1.0", 64, 16, 3)
            for name in ("conv5X5_2.0", "conv7X7_2.0", "conv7x7_3.0"):
                self._add(f"{s}.{name}", 16, 16, 3)
        for i in range(3):
            for head, k in (("class_head", 4), ("bbox_head", 8), ("landmark_head", 20)):
                self._add(f"{head}.{i}", 64, k, 1)

    def _add(self, name: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        self.convs[_key(name)] = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)

    def c(self, name: str, x: torch.Tensor, act: bool = True) -> torch.Tensor:
        y = self.convs[_key(name)](x)
        return F.leaky_relu(y, SLOPE) if act else y

    def forward(self, x: torch.Tensor):
        x = self.c("fx.stage1.0.0", x)
        outs = {}
        for stage, dw, pw in self.body:
            x = self.c(pw, self.c(dw, x))
            outs[stage] = x
        o1, o2, o3 = (self.c(f"fpn.output{i}.0", outs[f"stage{i}"]) for i in (1, 2, 3))
        o2 = self.c("fpn.merge2.0", o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.c("fpn.merge1.0", o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        heads = {"class_head": [], "bbox_head": [], "landmark_head": []}
        for i, f in enumerate((o1, o2, o3)):
            s = f"ssh{i + 1}"
            c5 = self.c(f"{s}.conv5X5_1.0", f)
            f = F.relu(torch.cat([self.c(f"{s}.conv3X3.0", f, act=False),
                                  self.c(f"{s}.conv5X5_2.0", c5, act=False),
                                  self.c(f"{s}.conv7x7_3.0", self.c(f"{s}.conv7X7_2.0", c5),
                                         act=False)], dim=1))
            for head, k in (("class_head", 2), ("bbox_head", 4), ("landmark_head", 10)):
                y = self.c(f"{head}.{i}", f, act=False).permute(0, 2, 3, 1)
                heads[head].append(y.reshape(y.shape[0], -1, k))
        conf = torch.softmax(torch.cat(heads["class_head"], 1), dim=-1)[..., 1]
        return torch.cat(heads["bbox_head"], 1), conf, torch.cat(heads["landmark_head"], 1)


def _key(name: str) -> str:
    return name.replace(".", "__")


def from_onnx(data: bytes) -> RetinaFace:
    """The network with the ONNX model's weights: each Conv node's name is its module's
    path (``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv``: ``fx.stage1.1.0.0``)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(data).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    net = RetinaFace()
    state = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        parts = node.name.strip("/").split("/") if node.name else node.output[0].split("/")[1:]
        leaf = parts[-2]
        name = leaf if leaf.startswith(parts[0] + ".") else f"{parts[0]}.{leaf}"
        if name.endswith("_1"):  # a module the export ran twice (the SSH's conv5X5_1)
            continue
        w, b = (tensors[alias.get(i, i)] for i in node.input[1:3])
        state[f"convs.{_key(name)}.weight"] = torch.from_numpy(w.copy())
        state[f"convs.{_key(name)}.bias"] = torch.from_numpy(b.copy())
    net.load_state_dict(state, strict=True)  # every conv once, of its shape
    return net.eval()


def anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors (centre x, centre y, width, height) as fractions of the input, in the
    network's output order: per level, per cell (row-major), per anchor size."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * stride / width,
                            (ys.ravel() + 0.5) * stride / height], axis=1)
        for_cell = np.array([[s / width, s / height] for s in sizes])
        out.append(np.concatenate([np.repeat(centres, len(sizes), axis=0),
                                   np.tile(for_cell, (len(centres), 1))], axis=1))
    return np.concatenate(out).astype(np.float32)


def decode(loc: torch.Tensor, landmarks: torch.Tensor, priors: torch.Tensor,
           height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (..., 4: x1, y1, x2, y2) and landmarks (..., 5, 2) in input pixels."""
    v0, v1 = VARIANCES
    centre = priors[..., :2] + loc[..., :2] * v0 * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * v1)
    scale = torch.tensor([width, height], dtype=loc.dtype, device=loc.device)
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1) * scale.repeat(2)
    points = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    points = (priors[..., None, :2] + points * v0 * priors[..., None, 2:]) * scale
    return boxes, points
