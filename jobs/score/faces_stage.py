"""The score pipeline's face stage (``faces=largest`` or ``all``), in CPU tasks in place of
the decode stage: decode each photo at full resolution, detect its faces (RetinaFace in
onnxruntime, one thread, a batch of photos at a time), align the largest (or each, a row
per face, largest first) to the template, and prepare the aligned crop as the decode stage
prepares an image (the model's resize and centre crop). A photo without a face is a row
with status ``no_face``; the face's index, box, landmarks and confidence go on in the
``face*`` columns (with ``all``, ``face_count``: the photo's faces, its rows).

When the scoring actors decode on their device (``device_decode``, on by default on GPUs),
the task only passes each read photo on as its encoded bytes, and the actor does all of it
on the device in batches (:func:`device_faces`: nvJPEG, the detector in torch, the warp and
the resize there): full photos never travel decoded, and only crops reach the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fiqa_core.images import Decoded, decode_image, prepare_image

from .pipeline import DECODED_SCHEMA, DEFERRED, FACT_COLUMNS, READ_OK, _with_columns
from .schema import FACE_COLUMNS, OUTPUT_SCHEMA

FACES_SCHEMA = pa.schema([*DECODED_SCHEMA, *(f for f in OUTPUT_SCHEMA if f.name in FACE_COLUMNS)])
CHUNK = 4  # photos detected together in a CPU task, at most
CHUNK_PIXELS = 16_000_000  # ... and at most this many pixels held decoded (one photo if larger)
DEVICE_CHUNK = 16  # photos decoded and detected together on a scoring actor's device


class _Rows:
    """Output rows being built: per row, its photo's row in the batch (``source``), its
    status and face columns, and its crop (None without a face)."""

    def __init__(self):
        self.source: list[int] = []
        self.crops: list = []
        self.cols: dict[str, list] = {k: [] for k in ("status", "error", "width", "height",
                                                     *FACE_COLUMNS)}

    def add(self, i: int, d: Decoded, crop=None, count: int | None = None) -> None:
        self.source.append(i)
        self.crops.append(None if crop is None else crop.pixels)
        for k, v in (("status", d.status), ("error", d.error), ("width", d.width),
                     ("height", d.height), ("face_count", count),
                     ("face", None if crop is None else crop.face)):
            self.cols[k].append(v)
        for k, v in zip(FACE_COLUMNS[2:], _face_fields(crop), strict=True):
            self.cols[k].append(v)

    def add_photos(self, rows, decoded, photos, found, face: dict, size: int,
                   on_host: bool = True) -> None:
        """Rows ``rows`` of the batch: each photo's face row(s), a ``no_face`` row, or its
        status row (``decoded``: row -> Decoded; ``photos``, ``found``: row -> its tensor
        and its faces, for the decoded ones)."""
        from fiqa_core.faces import align_faces, no_face

        for i in rows:
            d = decoded[i]
            if not d.ok:
                self.add(i, d)
            elif not len(found[i]):
                self.add(i, no_face(d, face["threshold"], face["min_face"]))
            else:
                count = len(found[i]) if face["mode"] == "all" else None
                for crop in align_faces(photos[i], found[i], face["template"], size,
                                        face["mode"], on_host):
                    self.add(i, d, crop, count)


def faces_batch(batch: pa.Table, size: int, max_pixels: int, face: dict,
                defer: bool = False) -> pa.Table:
    """Per read photo: its largest face (``face["mode"]`` ``largest``) or each of its
    faces, largest first (``all``: a row each), aligned to ``face["template"]`` and prepared
    (``size`` x ``size``); or one row with its status (the read's, the decode's, or
    ``no_face``). ``face``: :func:`~jobs.score.stages.face_stage_settings`.

    With ``defer``, every read photo passes on as its encoded bytes (status ``deferred``):
    the scoring actor decodes, detects and aligns it on its device (:func:`device_faces`).
    """
    if defer:
        read = pc.equal(batch.column("status"), READ_OK)
        return _with_columns(batch, FACES_SCHEMA, {
            "pixels": [b""] * len(batch), "encoded": batch.column("encoded"),
            "status": pc.if_else(read, DEFERRED, batch.column("status")),
            "error": batch.column("error"), "width": [None] * len(batch),
            "height": [None] * len(batch), **{k: [None] * len(batch) for k in FACE_COLUMNS}})
    out = cpu_rows(batch, face, size, max_pixels)
    cols = {**out.cols, "encoded": [b""] * len(out.source), "pixels": [
        b"" if c is None else prepare_image(c, size, max_pixels=max_pixels).image.tobytes()
        for c in out.crops]}
    # the listed facts per output row (not the photos' bytes, which would be copied too)
    return _with_columns(batch.select(list(FACT_COLUMNS)).take(out.source), FACES_SCHEMA, cols)


def cpu_rows(batch: pa.Table, face: dict, size: int, max_pixels: int) -> _Rows:
    """The output rows of read photos (``batch``: bytes and read statuses), detected in
    onnxruntime on one thread, a few photos at a time, with their crops on the host."""
    from fiqa_core.faces import as_tensor, cpu_detector

    det = cpu_detector(face["threshold"], face["min_face"])
    out = _Rows()
    data = batch.column("encoded").to_pylist()
    read = list(zip(batch.column("status").to_pylist(), batch.column("error").to_pylist(),
                    strict=True))
    for rows, decoded in _chunks(data, read, max_pixels):
        ok = [i for i in rows if decoded[i].ok]
        photos = dict(zip(ok, (as_tensor(decoded[i].image) for i in ok), strict=True))
        found = dict(zip(ok, det.detect(list(photos.values())), strict=True))
        out.add_photos(rows, decoded, photos, found, face, size)
        decoded.clear()  # this chunk's photos go before the next chunk's are decoded
        photos = found = None
    return out


def device_faces(batch: dict, detector, face: dict, size: int, max_pixels: int):
    """A scoring actor's batch (numpy columns) whose read photos were deferred to it
    (``faces_batch(defer=True)``): decoded on the detector's device (eligible JPEGs in one
    call), detected in batches, each face aligned and resized there.

    Returns the batch's output rows (the listed facts repeated per face, the status and face
    columns) and their prepared pixels (N x S x S x 3 uint8 on the device, zeros where a row
    has no face), in the order :func:`faces_batch` gives them.
    """
    import torch

    from fiqa_core.batch_decode import decode_photos, resize_crop_tensor

    status = batch["status"]
    out = _Rows()
    for start in range(0, len(status), DEVICE_CHUNK):
        rows = list(range(start, min(start + DEVICE_CHUNK, len(status))))
        deferred = [i for i in rows if status[i] == DEFERRED]
        decoded = {i: Decoded(status[i], batch["error"][i]) for i in rows}
        photos = {}
        for i, (d, photo) in zip(deferred, decode_photos(
                [batch["encoded"][i] for i in deferred], detector.device, max_pixels),
                strict=True):
            decoded[i] = d
            if photo is not None:
                photos[i] = photo
        found = dict(zip(photos, detector.detect(list(photos.values())), strict=True))
        out.add_photos(rows, decoded, photos, found, face, size, on_host=False)
        photos = found = None
    pixels = torch.zeros((len(out.source), size, size, 3), dtype=torch.uint8,
                         device=detector.device)
    for k, crop in enumerate(out.crops):
        if crop is not None:
            pixels[k] = resize_crop_tensor(crop, size)
    source = np.asarray(out.source, dtype=np.int64)
    rows = {k: np.asarray(batch[k], dtype=object)[source] for k in FACT_COLUMNS}
    rows.update({k: np.array(v, dtype=object) for k, v in out.cols.items()})
    return rows, pixels


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
