"""The alignment templates: each one's side and its 5 points (image-left eye, image-right
eye, nose tip, image-left and image-right mouth corners), published for OpenCV's integer
pixel centres and shifted here by half a pixel to continuous coordinates (pixel ``i``
spans ``[i, i + 1)``). Torch-free: settings name them."""

from __future__ import annotations

import numpy as np

# name: (side in pixels, the 5 points in OpenCV pixel coordinates)
TEMPLATES: dict[str, tuple[int, list[list[float]]]] = {
    # FFHQ's 512 x 512 alignment as facexlib (pyiqa's topiq_nr-face) applies it
    "ffhq512": (512, [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                      [201.26117, 371.41043], [313.08905, 371.15118]]),
    # OFIQ (ISO/IEC 29794-5): eye centres, nose tip and mouth corners of its 616 x 616 crop
    "ofiq616": (616, [[251, 272], [364, 272], [308, 336], [262, 402], [355, 402]]),
    # ArcFace / insightface's 112 x 112 recognition crop
    "arcface112": (112, [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]]),
}
MODEL = "model"  # FFHQ's relative geometry at the model's own input size
NAMES = (*TEMPLATES, MODEL)


def template(name: str, model_size: int) -> tuple[int, np.ndarray]:
    """The template's side and its 5 points (continuous coordinates)."""
    if name == MODEL:
        side, points = TEMPLATES["ffhq512"]
        scale = model_size / side
        return model_size, (np.asarray(points) + 0.5) * scale
    if name not in TEMPLATES:
        raise ValueError(f"face_template={name!r}: one of {', '.join(NAMES)}")
    side, points = TEMPLATES[name]
    return side, np.asarray(points, dtype=np.float64) + 0.5


