"""The score pipeline's face stage (``faces=largest`` or ``all``), in CPU tasks in place of
the decode stage: decode each photo at full resolution, detect its faces (RetinaFace in
onnxruntime, one thread, a batch of photos at a time), align the largest (or each, a row
per face, largest first) to the template, and prepare the aligned crop as the decode stage
prepares an image (the model's resize and centre crop). A photo without a face is a row
with status ``no_face``; the face's index, box, landmarks and confidence go on in the
``face*`` columns (with ``all``, ``face_count``: the photo's faces, its rows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fiqa_core.images import Decoded, decode_image, prepare_image

from .pipeline import DECODED_SCHEMA, FACT_COLUMNS, READ_OK, _with_columns
from .schema import FACE_COLUMNS, OUTPUT_SCHEMA

FACES_SCHEMA = pa.schema([*DECODED_SCHEMA, *(f for f in OUTPUT_SCHEMA if f.name in FACE_COLUMNS)])
CHUNK = 4  # photos detected together, at most
CHUNK_PIXELS = 16_000_000  # ... and at most this many pixels held decoded (one photo if larger)


def faces_batch(batch: pa.Table, size: int, max_pixels: int, template: str,
                threshold: float, min_face: int, mode: str = "largest") -> pa.Table:
    """Per read photo: its largest face (``mode`` ``largest``) or each of its faces, largest
    first (``all``: a row each), aligned and prepared (``size`` x ``size``); or one row with
    its status (the read's, the decode's, or ``no_face``)."""
    from fiqa_core.faces import align_faces, as_tensor, cpu_detector, no_face

    det = cpu_detector(threshold, min_face)
    cols: dict[str, list] = {k: [] for k in ("pixels", "status", "error", "width", "height",
                                             *FACE_COLUMNS)}
    source: list[int] = []  # per output row, its photo's row in ``batch``

    def add(i: int, d: Decoded, crop=None, count: int | None = None) -> None:
        source.append(i)
        cols["pixels"].append(prepare_image(crop.pixels, size, max_pixels=max_pixels)
                              .image.tobytes() if crop is not None else b"")
        for k, v in (("status", d.status), ("error", d.error), ("width", d.width),
                     ("height", d.height), ("face_count", count)):
            cols[k].append(v)
        for k, v in zip(FACE_COLUMNS[2:], _face_fields(crop), strict=True):
            cols[k].append(v)
        cols["face"].append(None if crop is None else crop.face)

    data = batch.column("encoded").to_pylist()
    read = list(zip(batch.column("status").to_pylist(), batch.column("error").to_pylist(),
                    strict=True))
    for rows, decoded in _chunks(data, read, max_pixels):
        ok = [i for i in rows if decoded[i].ok]
        photos = dict(zip(ok, (as_tensor(decoded[i].image) for i in ok), strict=True))
        found = dict(zip(ok, det.detect(list(photos.values())), strict=True))
        for i in rows:
            d = decoded[i]
            if not d.ok:
                add(i, d)
            elif not len(found[i]):
                add(i, no_face(d, threshold, min_face))
            else:
                count = len(found[i]) if mode == "all" else None
                for crop in align_faces(photos[i], found[i], template, size, mode):
                    add(i, d, crop, count)
        decoded.clear()  # this chunk's photos go before the next chunk's are decoded
        photos = found = None
    cols["encoded"] = [b""] * len(source)
    # the listed facts per output row (not the photos' bytes, which would be copied too)
    return _with_columns(batch.select(list(FACT_COLUMNS)).take(source), FACES_SCHEMA, cols)


def _face_fields(crop) -> tuple:
    """A crop's confidence, box and landmarks as a row holds them (None without a face)."""
    if crop is None:
        return None, None, None
    return (crop.score, np.asarray(crop.box, np.float64).round(2).tolist(),
            crop.landmarks.astype(np.float64).round(2).ravel().tolist())


def _chunks(data: list, read: list, max_pixels: int):
    """The batch's rows decoded a few at a time: (row numbers, their Decoded), each chunk
    at most :data:`CHUNK` photos and :data:`CHUNK_PIXELS` pixels (or one photo)."""
    rows, decoded, pixels = [], {}, 0
    for i, (status, error) in enumerate(read):
        d = Decoded(status, error) if status != READ_OK else decode_image(data[i], max_pixels)
        data[i] = None  # its bytes are not needed again
        rows.append(i)
        decoded[i] = d
        pixels += (d.width or 0) * (d.height or 0) if d.ok else 0
        if len(rows) == CHUNK or pixels >= CHUNK_PIXELS:
            yield rows, decoded
            rows, decoded, pixels = [], {}, 0
    if rows:
        yield rows, decoded
