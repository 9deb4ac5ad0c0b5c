"""Faces in photographs: detection (RetinaFace, weights from the ``faces`` extra), and
alignment to a template, so a photo that is not a face crop can be scored.

Modules: ``templates`` (the templates' points; torch-free, so settings can name them),
``weights`` (the shipped ONNX bytes, verified), ``retinaface`` (the network in torch,
decoding), ``detect`` (:class:`Detector`: batches of photos -> :class:`Faces`), ``align``
(the similarity fit, the warp), ``extract`` (detect + align). Names load on first use.
"""

import importlib

_WHERE = {"TEMPLATE_NAMES": "templates", "template": "templates", "similarity": "align",
          "warp": "align", "MODES": "extract", "NO_FACE": "extract", "Crop": "extract",
          "align_faces": "extract", "align_to": "extract", "aligned_face": "extract",
          "crops": "extract", "no_face": "extract",
          "DetectSettings": "detect", "Detector": "detect", "Faces": "detect",
          "as_tensor": "detect", "cpu_detector": "detect"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_WHERE[name]}")
    return module if name == _WHERE[name] else getattr(module, name)
