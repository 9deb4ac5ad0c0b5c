"""The score pipeline's task stages: read each image's bytes, then decode and prepare it.

Rows carry only what the next stage needs: the read stage's bytes go no further than the
decode stage (Ray fuses the two into one task, so they never enter the object store); the
decode stage hands on a prepared image as its S x S x 3 bytes, a refused one as nothing,
and a JPEG that the scorer decodes on its device as its encoded bytes alone.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fiqa_core import storage
from fiqa_core.images import Decoded, prepare_image
from fiqa_core.lake import load_images

from .config import ScoreConfig
from .schema import PLAN_SCHEMA

DEFERRED = "deferred"  # inside the pipeline only: the scoring actor decodes it on its device
READ_OK = ""  # inside the pipeline only: read, not decoded yet
FACT_COLUMNS = ("path", "size", "mtime", "etag", "bucket")
READ_SCHEMA = pa.schema([*PLAN_SCHEMA, ("encoded", pa.binary()), ("status", pa.string()),
                         ("error", pa.string())])
DECODED_SCHEMA = pa.schema([*PLAN_SCHEMA, ("pixels", pa.binary()), ("encoded", pa.binary()),
                            ("status", pa.string()), ("error", pa.string()),
                            ("width", pa.int64()), ("height", pa.int64())])


def decode_task_memory(cfg: ScoreConfig, size: int) -> int:
    """Bytes a read + decode task reserves: ``decode_task_mb``, or an estimate: the worker
    process itself (pandas, pyarrow, PIL: ~300 MiB measured), one 4 MP photo decoding
    (RGB), the batch's encoded bytes (2 MB each, all may be read ahead) and its crops."""
    if cfg.decode_task_mb:
        return cfg.decode_task_mb * 2**20
    process = 300 * 2**20
    return process + 4_000_000 * 3 + cfg.decode_batch_size * (2_000_000 + size * size * 3)


def read_batch(batch: pa.Table, threads: int) -> pa.Table:
    """Each row's bytes, read concurrently (the store's client retries transient errors);
    an object that cannot be read gets its status (``missing`` / ``read_error``) here.
    Arrow in, Arrow out: the listed facts pass through as they are, never via pandas."""
    kept: dict[int, bytes] = {}

    def keep(data: bytes) -> Decoded:
        result = Decoded(READ_OK)
        kept[id(result)] = data
        return result

    paths = batch.column("path").to_pylist()
    if paths and storage.local_path(paths[0]) is not None:
        threads = 1  # a local read waits on nothing: threads would only add their overhead
    results = load_images(paths, keep, threads)
    return _with_columns(batch, READ_SCHEMA, {
        "encoded": [kept.get(id(r), b"") for r in results],
        "status": [r.status for r in results],
        "error": [r.error for r in results],
    })


def decode_batch(batch: pa.Table, size: int, draft: bool, max_pixels: int,
                 defer_jpeg: bool = False) -> pa.Table:
    """Decode + resize + centre-crop each read image; one status per row.

    With ``defer_jpeg``, JPEGs the scoring actor decodes in batches on its device
    (:func:`fiqa_core.batch_decode.device_eligible`) pass on as their bytes (status
    ``deferred``); every other file is decoded here.
    """
    if defer_jpeg:
        from fiqa_core.batch_decode import device_eligible
    pixels, encoded, status, error, width, height = [], [], [], [], [], []
    for data, read_status, read_error in zip(batch.column("encoded").to_pylist(),
                                             batch.column("status").to_pylist(),
                                             batch.column("error").to_pylist(), strict=True):
        if read_status != READ_OK:
            d = Decoded(read_status, read_error)
        elif defer_jpeg and device_eligible(data, max_pixels):
            d = Decoded(DEFERRED)
        else:
            d = prepare_image(data, size, max_pixels=max_pixels, draft=draft)
        pixels.append(d.image.tobytes() if d.ok else b"")
        encoded.append(data if d.status == DEFERRED else b"")
        status.append(d.status)
        error.append(d.error)
        width.append(d.width)
        height.append(d.height)
    return _with_columns(batch, DECODED_SCHEMA, {
        "pixels": pixels, "encoded": encoded, "status": status, "error": error,
        "width": width, "height": height})


def _with_columns(batch: pa.Table, schema: pa.Schema, new: dict[str, list]) -> pa.Table:
    """``schema``'s table: the listed facts from ``batch`` (cast where a block inferred
    another type), the other columns from ``new``."""
    columns = [batch.column(f.name).cast(f.type) if f.name in FACT_COLUMNS
               else _array(new[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _array(values, type_: pa.DataType):
    """A column from a list, or from an Arrow column as it is (cast where needed)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(type_)
    return pa.array(values, type=type_)


def stack_pixels(rows, size: int) -> np.ndarray:
    """N x S x S x 3 uint8 from rows of prepared bytes (zeros where a row has none)."""
    out = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    for i, data in enumerate(rows):
        if data:
            out[i] = np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3)
    return out
