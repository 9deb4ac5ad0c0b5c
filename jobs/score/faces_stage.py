"""The score pipeline's face stage (``faces=largest``), in CPU tasks in place of the decode
stage: decode each photo at full resolution, detect its faces (RetinaFace in onnxruntime,
one thread, a batch of photos at a time), align the largest to the template, and prepare
the aligned crop as the decode stage prepares an image (the model's resize and centre
crop). A photo without a face is a row with status ``no_face``; the face's box, landmarks
and confidence go on in the ``face_*`` columns.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from fiqa_core.images import Decoded, decode_image, prepare_image

from .pipeline import DECODED_SCHEMA, READ_OK, _with_columns

FACES_SCHEMA = pa.schema([*DECODED_SCHEMA, ("face", pa.int64()), ("face_score", pa.float64()),
                          ("face_box", pa.list_(pa.float64())),
                          ("face_landmarks", pa.list_(pa.float64()))])
CHUNK = 4  # photos detected together, at most
CHUNK_PIXELS = 16_000_000  # ... and at most this many pixels held decoded (one photo if larger)


@functools.lru_cache(maxsize=2)
def detector(threshold: float, min_face: int):
    """This worker process's detector (loaded once; onnxruntime on one thread, as a task
    has one CPU)."""
    from fiqa_core.faces import Detector, DetectSettings

    return Detector(DetectSettings(threshold=threshold, min_face=min_face),
                    backend="onnxruntime", threads=1)


def faces_batch(batch: pa.Table, size: int, max_pixels: int, template: str,
                threshold: float, min_face: int) -> pa.Table:
    """Per read photo: its largest face aligned and prepared (``size`` x ``size``), or its
    status (the read's, the decode's, or ``no_face``)."""
    from fiqa_core.faces import NO_FACE, align_faces, as_tensor

    det = detector(threshold, min_face)
    n = batch.num_rows
    cols = {k: [None] * n for k in ("pixels", "status", "error", "width", "height", "face",
                                    "face_score", "face_box", "face_landmarks")}
    cols["pixels"], cols["encoded"] = [b""] * n, [b""] * n
    data = batch.column("encoded").to_pylist()
    read = list(zip(batch.column("status").to_pylist(), batch.column("error").to_pylist(),
                    strict=True))
    for rows, decoded in _chunks(data, read, max_pixels):
        ok = [i for i in rows if decoded[i].ok]
        photos = [as_tensor(decoded[i].image) for i in ok]
        for i, photo, faces in zip(ok, photos, det.detect(photos), strict=True):
            d = decoded[i]
            if not len(faces):
                decoded[i] = Decoded(NO_FACE, f"no face found (face_threshold {threshold}, "
                                     f"min_face {min_face} px)", width=d.width, height=d.height)
                continue
            (crop,) = align_faces(photo, faces, template, size, "largest")
            prepared = prepare_image(crop.pixels, size, max_pixels=max_pixels)
            cols["pixels"][i] = prepared.image.tobytes()
            cols["face"][i], cols["face_score"][i] = crop.face, crop.score
            cols["face_box"][i] = np.asarray(crop.box, np.float64).round(2).tolist()
            cols["face_landmarks"][i] = crop.landmarks.astype(np.float64).round(2).ravel().tolist()
        for i in rows:
            d = decoded[i]
            cols["status"][i], cols["error"][i] = d.status, d.error
            cols["width"][i], cols["height"][i] = d.width, d.height
        decoded.clear()  # this chunk's photos go before the next chunk's are decoded
        photos = None
    return _with_columns(batch, FACES_SCHEMA, cols)


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
