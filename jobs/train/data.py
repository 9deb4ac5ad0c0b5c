"""Ray Data side of training: decode each image once into a cache, then crop every epoch.

Decoding is the wall for the student (PIL decodes ~1,250 face JPEGs/s on 16 cores,
while an H100 trains on ~2,900/s), so images are decoded and resized (short side -> S)
once per job into Parquet shards of raw pixels; each epoch then reads those shards and
takes a random S x S crop, a slice. The cache survives interruptions: a resumed or
restarted run reuses it.
"""

from __future__ import annotations

import json
import logging

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.datasource import FileShuffleConfig
from ray.data.expressions import col

from fiqa_core import storage
from fiqa_core.images import Decoded, crop_array, decode_image, decode_resized
from fiqa_core.lake import load_images
from fiqa_core.tables import list_parquet_files
from jobs.ray_env import read_parquet

log = logging.getLogger("fiqa.train")

CACHE_MARKER = "_SUCCESS"
FACE_CHUNK = 4  # faces=: photos decoded at full size together (100 MP ones: 1.2 GB)


def decode_resize_batch(
    batch: pd.DataFrame, size: int, max_aspect: float, max_pixels: int, threads: int = 8,
    faces: dict | None = None,
) -> pd.DataFrame:
    """Map-batches stage: read bytes, decode, resize short side; one status per row. With
    ``faces`` (:func:`~jobs.train.config.face_settings`), each image is a photo: decoded
    at full size and aligned to the template first (:func:`_aligned`)."""
    paths = list(batch["path"])
    if faces is None:
        results = load_images(paths, lambda data: decode_resized(
            data, size, max_aspect=max_aspect, max_pixels=max_pixels), threads)
    else:
        results, landmarks = [], list(batch["landmarks"])
        for i in range(0, len(paths), FACE_CHUNK):  # a few full-size photos held at a time
            photos = load_images(paths[i:i + FACE_CHUNK],
                                 lambda data: decode_image(data, max_pixels), FACE_CHUNK)
            results += [_aligned(d, lmk, size, max_aspect, max_pixels, faces)
                        for d, lmk in zip(photos, landmarks[i:i + FACE_CHUNK], strict=True)]
    return batch.assign(
        pixels=[d.image.tobytes() if d.ok else b"" for d in results],
        height=[d.image.shape[0] if d.ok else 0 for d in results],
        width=[d.image.shape[1] if d.ok else 0 for d in results],
        status=[d.status for d in results],
        error=[d.error for d in results],
    )


def _aligned(photo: Decoded, landmarks, size: int, max_aspect: float, max_pixels: int,
             faces: dict) -> Decoded:
    """A decoded photo's face, aligned to the template and resized as any image: by the
    row's landmarks (a pseudo-label row written with ``faces=``), or else by its largest
    face found (none: status ``no_face``, the row left out like any bad image)."""
    from fiqa_core.faces import aligned_face

    crop, row = aligned_face(photo, faces, size, landmarks)
    if crop is None:
        return row
    return decode_resized(crop, size, max_aspect=max_aspect, max_pixels=max_pixels)


def _pseudo_rows(folder: str, source_id: int, faces: bool = False) -> ray.data.Dataset:
    """Rows with status ok and a finite calibrated score from one pseudo-label folder;
    with ``faces``, each with its face's landmarks where the rows have them (written with
    ``faces=``), which align it."""
    files = list_parquet_files(folder)
    columns = ["path", "score", "status"]
    fs, first = fsspec.core.url_to_fs(files[0])
    if faces and "face_landmarks" in pq.read_schema(first, filesystem=fs).names:
        columns.append("face_landmarks")
    ds = read_parquet(files, columns=columns)
    ds = ds.filter(expr=col("status") == "ok").drop_columns(["status"])

    def tag(batch: pd.DataFrame) -> pa.Table:
        batch = batch[np.isfinite(batch["score"].astype("float64"))]
        landmarks = batch["face_landmarks"] if "face_landmarks" in batch else None
        return _path_table(batch.assign(split="train", source_id=source_id, row_id=-1,
                                        landmarks=landmarks))

    return ds.map_batches(tag, batch_format="pandas")


PATH_TABLE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("score", pa.float64()),
        ("split", pa.string()),
        ("source_id", pa.int64()),
        ("row_id", pa.int64()),
        ("landmarks", pa.list_(pa.float64())),  # a pseudo-label row's face (faces=)
    ]
)


def _path_table(df: pd.DataFrame) -> pa.Table:
    """One Arrow schema for labeled and pseudo rows (Ray cannot shuffle mixed block types)."""
    return pa.Table.from_pandas(
        df[PATH_TABLE_SCHEMA.names], schema=PATH_TABLE_SCHEMA, preserve_index=False
    )


def build_cache(
    labels: pd.DataFrame,
    pseudo_folders: list[str],
    cache_uri: str,
    size: int,
    max_aspect: float,
    max_pixels: int,
    seed: int,
    decode_batch_size: int = 16,
    faces: dict | None = None,
) -> dict:
    """Decode every training and validation image once into ``cache_uri`` (idempotent).

    Returns the cache summary (also written as ``_SUCCESS``): row counts by split, source
    and status.
    """
    marker = storage.join(cache_uri, CACHE_MARKER)
    if storage.exists(marker):
        summary = json.loads(storage.read_bytes(marker))
        log.info(
            "image cache found at %s (%d rows): not decoding again", cache_uri, summary["rows"]
        )
        return summary
    data_uri = storage.join(cache_uri, "data")
    storage.remove(data_uri)  # a partial cache from an interrupted run
    ds = ray.data.from_arrow(_path_table(labels.assign(
        source_id=0, row_id=np.arange(len(labels)), landmarks=None)))
    for i, folder in enumerate(pseudo_folders, start=1):
        ds = ds.union(_pseudo_rows(folder, i, faces is not None))
    # shuffle the (small) path table once; epochs then shuffle files + a local buffer
    ds = ds.random_shuffle(seed=seed)
    ds = ds.map_batches(
        decode_resize_batch,
        fn_kwargs={"size": size, "max_aspect": max_aspect, "max_pixels": max_pixels,
                   "faces": faces},
        batch_size=decode_batch_size,
        batch_format="pandas",
    )
    ds.write_parquet(data_uri, min_rows_per_file=64)
    summary = summarise_cache(data_uri)
    storage.write_bytes(marker, json.dumps(summary, indent=2).encode())
    return summary


def summarise_cache(data_uri: str) -> dict:
    fs, path = fsspec.core.url_to_fs(data_uri)
    t = pq.read_table(
        path, filesystem=fs, columns=["split", "source_id", "status", "path", "error"]
    ).to_pandas()
    bad = t[t["status"] != "ok"]
    return {
        "rows": len(t),
        "ok": int((t["status"] == "ok").sum()),
        "by_status": {k: int(v) for k, v in t["status"].value_counts().items()},
        "by_split": {
            k: int(v) for k, v in t.loc[t["status"] == "ok", "split"].value_counts().items()
        },
        "by_source": {
            str(k): int(v)
            for k, v in t.loc[t["status"] == "ok", "source_id"].value_counts().items()
        },
        "bad_examples": bad[["path", "status", "error"]].head(20).to_dict("records"),
    }


def _unpack(batch: dict, size: int, train: bool, rng=None) -> np.ndarray:
    return (
        np.stack(
            [
                crop_array(np.frombuffer(p, np.uint8).reshape(h, w, 3), size, train, rng)
                for p, h, w in zip(batch["pixels"], batch["height"], batch["width"], strict=True)
            ]
        )
        if len(batch["pixels"])
        else np.zeros((0, size, size, 3), np.uint8)
    )


def training_dataset(cache_uri: str, size: int, seed: int) -> ray.data.Dataset:
    """Training rows (labeled train split + pseudo), random S x S crops, shuffled files."""
    ds = read_parquet(
        storage.join(cache_uri, "data"),
        columns=["pixels", "height", "width", "score", "source_id", "split", "status"],
        shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True),
    ).filter(expr=(col("split") == "train") & (col("status") == "ok"))

    def crop(batch: dict) -> dict:
        return {
            "pixels": _unpack(batch, size, train=True, rng=np.random.default_rng()),
            "score": batch["score"].astype(np.float32),
            "source_id": batch["source_id"].astype(np.int64),
        }

    return ds.map_batches(crop, batch_format="numpy", batch_size=64)


def eval_dataset(cache_uri: str, size: int, split: str, labeled_only: bool) -> ray.data.Dataset:
    """Centre S x S crops of one split (validation, or labeled train rows for calibration)."""
    cond = (col("split") == split) & (col("status") == "ok")
    if labeled_only:
        cond = cond & (col("source_id") == 0)
    ds = read_parquet(
        storage.join(cache_uri, "data"),
        columns=["pixels", "height", "width", "score", "row_id", "source_id", "split", "status"],
    ).filter(expr=cond)

    def crop(batch: dict) -> dict:
        return {
            "pixels": _unpack(batch, size, train=False),
            "score": batch["score"].astype(np.float64),
            "row_id": batch["row_id"].astype(np.int64),
        }

    return ds.map_batches(crop, batch_format="numpy", batch_size=64)
