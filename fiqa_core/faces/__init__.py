"""Faces in photographs: detection (RetinaFace, weights from the ``faces`` extra), and
alignment to a template, so a photo that is not a face crop can be scored.

Modules: ``weights`` (the shipped ONNX bytes, verified), ``retinaface`` (the network in
torch, decoding), ``detect`` (:class:`Detector`: batches of photos -> :class:`Faces`),
``align`` (templates, the similarity fit, the warp), ``crops`` (detect + align).
"""

from .align import NAMES as TEMPLATE_NAMES
from .align import similarity, template, warp
from .crops import MODES, Crop, align_faces, crops
from .detect import Detector, DetectSettings, Faces, as_tensor

__all__ = ["MODES", "TEMPLATE_NAMES", "Crop", "DetectSettings", "Detector", "Faces",
           "align_faces", "as_tensor", "crops", "similarity", "template", "warp"]
