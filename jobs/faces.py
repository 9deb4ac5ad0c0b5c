"""``fiqa faces``: the aligned faces of a folder of photographs, as image files with their
boxes and landmarks: a training set (or a lake of face crops) built from photos.

    fiqa faces input=s3://lake/photos/ output=s3://sets/photo-faces

list (as ``fiqa score`` lists: folders, prefixes, globs) -> read -> decode, detect
(RetinaFace, the faces extra) and align every face (``faces=all``, largest first) or the
largest to ``face_template`` (CPU tasks) -> each crop written as
``<output>/crops/<the photo's path under input>.face<k>.png`` -> ``<output>/faces.parquet``:
a row per face (its crop, box, 5 landmarks and confidence), one ``no_face`` row per photo
without a face and one row per file that could not be read or decoded (its status), never
a drop -> ``_SUCCESS`` (counts), written last.

The crops are face crops as ``fiqa score`` / ``fiqa pseudo-label`` / ``fiqa train`` take
them at ``faces=none``. One run at a time writes an output (its lease); a committed output
is never changed: the same command again is a no-op, other settings are refused. A run
that stopped is run again whole (every crop's name is fixed by its photo and face, so a
rerun writes the same files; crops of an earlier attempt that its rows do not name are
removed before the commit).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fiqa_core import storage
from fiqa_core.config import resolve_config, setting
from fiqa_core.errors import ConfigError, FiqaError, NotFoundError
from fiqa_core.faces.templates import MODEL, NAMES
from fiqa_core.images import DEFAULT_MAX_PIXELS
from jobs.cli import JobFailed, overrides_of, parse_args, run_job, settings_parser

MARKER, ROWS, CROPS = "_SUCCESS", "faces.parquet", "crops"
FORMATS = {"png": "PNG", "jpeg": "JPEG"}
ROW_SCHEMA = pa.schema([
    ("path", pa.string()), ("face", pa.int64()), ("face_count", pa.int64()),
    ("crop", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("face_score", pa.float64()),
    ("face_box", pa.list_(pa.float64())), ("face_landmarks", pa.list_(pa.float64())),
    ("size", pa.int64()), ("mtime", pa.float64()), ("etag", pa.string())])


@dataclass(frozen=True)
class FacesConfig:
    input: str = setting(help="photos: a folder, prefix or glob (path or URI)")
    output: str = setting(help="where the crops, faces.parquet and _SUCCESS go (not under "
                          "input)")
    faces: str = setting("all", "all: every face, largest first (face 0..face_count-1); "
                         "largest: the largest face of each photo", choices=("all", "largest"))
    face_template: str = setting("ffhq512", "the alignment's template, and the crops' size: "
                                 "ffhq512 (as pyiqa, 512 px), ofiq616 (OFIQ, 616 px), "
                                 "arcface112 (112 px)",
                                 choices=tuple(n for n in NAMES if n != MODEL))
    min_face: int = setting(16, "smaller faces (box short side, pixels) are ignored")
    face_threshold: float = setting(0.9, "the detector's face probability a face needs")
    format: str = setting("png", "the crops' format: png (lossless) or jpeg (quality 95)",
                          choices=tuple(FORMATS))
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "photos with more pixels are refused "
                              "(status too_large)")
    batch_size: int = setting(16, "photos per task batch", operational=True)
    read_threads: int = setting(16, "concurrent reads per task (object stores)",
                                operational=True)
    address: str | None = setting(None, "Ray cluster address; unset: RAY_ADDRESS, else a "
                                  "local Ray", operational=True)

    def identity(self) -> dict:
        """What the output is a function of (a committed output matches it or is refused)."""
        from fiqa_core.faces.detect import DetectSettings

        detector = DetectSettings(threshold=self.face_threshold, min_face=self.min_face)
        return {"input": self.input, "faces": self.faces, "face_template": self.face_template,
                "format": self.format, "max_pixels": self.max_pixels, **detector.identity()}


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa faces", (__doc__ or "").strip(), FacesConfig)


def check(cfg: FacesConfig) -> None:
    if cfg.min_face < 1 or not 0 < cfg.face_threshold < 1 or min(
            cfg.batch_size, cfg.read_threads, cfg.max_pixels) < 1:
        raise ConfigError("min_face, batch_size, read_threads and max_pixels must be >= 1, "
                          "face_threshold between 0 and 1")
    base = _base(cfg.input).rstrip("/") + "/"
    if (cfg.output.rstrip("/") + "/").startswith(base):
        raise ConfigError(f"output={cfg.output} is under input={cfg.input}: the next run "
                          "would list its crops as photos; write it elsewhere")


def _base(uri: str) -> str:
    """The folder a (glob) input's paths are relative to."""
    wild = min((uri.index(c) for c in "*?[" if c in uri), default=None)
    return uri if wild is None else uri[:uri.rfind("/", 0, wild) + 1]


def crop_name(path: str, base: str, face: int, fmt: str) -> str:
    """A face's crop, relative to ``<output>/crops``: the photo's path under ``base`` (else
    a hash of the whole path) and the face's index."""
    base = base.rstrip("/") + "/"
    rel = path[len(base):] if path.startswith(base) else hashlib.sha256(
        path.encode()).hexdigest()[:24]
    return f"{rel}.face{face}.{fmt}"


def crops_batch(batch: pa.Table, output: str, base: str, face: dict, max_pixels: int,
                fmt: str) -> pa.Table:
    """Read photos -> their rows (a row per face, or per photo with its status); each face's
    crop written to the output (its name in ``crop``)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from jobs.score.faces_stage import cpu_rows
    from jobs.score.pipeline import FACT_COLUMNS, _with_columns

    out = cpu_rows(batch, face, 0, max_pixels)  # a named template has its own size
    paths = batch.column("path").to_pylist()
    names, writes = [], []
    for i, k, crop in zip(out.source, out.cols["face"], out.crops, strict=True):
        if crop is None:
            names.append(None)
            continue
        uri = storage.join(output, CROPS, crop_name(paths[i], base, k, fmt))
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format=FORMATS[fmt],
                                   **({"quality": 95} if fmt == "jpeg" else {}))
        names.append(uri)
        writes.append((uri, buf.getvalue()))
    local = storage.local_path(output) is not None
    with ThreadPoolExecutor(1 if local else 8) as pool:  # object stores: writes overlap
        list(pool.map(lambda w: storage.write_bytes(*w), writes))
    facts = batch.select(list(FACT_COLUMNS)).take(out.source)
    return _with_columns(facts, ROW_SCHEMA, {**out.cols, "crop": names})


def _complete(cfg: FacesConfig) -> dict | None:
    marker = storage.join(cfg.output, MARKER)
    if not storage.exists(marker):
        return None
    summary = json.loads(storage.read_bytes(marker))
    if summary.get("settings") == cfg.identity():
        print(f"{cfg.output} is complete ({summary['faces_found']} faces of "
              f"{summary['images']} photos); nothing to do.")
        return summary
    raise ConfigError(f"{cfg.output} already holds the faces of another run (input "
                      f"{summary.get('settings', {}).get('input')}, other settings); write "
                      "to another output")


def run(cfg: FacesConfig) -> dict:
    """Every face of every photo under ``cfg.input``; returns the ``_SUCCESS`` summary."""
    from fiqa_core.faces.weights import onnx_bytes
    from fiqa_core.lease import Lease

    check(cfg)
    onnx_bytes()  # the detector's weights, checked before any work
    try:
        done = _complete(cfg)
        if done is not None:
            return done
        with Lease(cfg.output, f"fiqa faces input={cfg.input}") as lease:
            return _complete(cfg) or _run(cfg, lease)
    except FiqaError:
        raise
    except Exception as e:
        raise JobFailed(f"fiqa faces failed before committing {cfg.output} ({type(e).__name__}: "
                        f"{e}); nothing was committed: run it again") from e


def _run(cfg: FacesConfig, lease) -> dict:
    from jobs.ray_env import init_ray, ray_data_progress
    from jobs.score.listing import list_lake, listing_budget
    from jobs.score.pipeline import read_batch
    from jobs.score.stages import FACE_TASK_MEMORY, face_stage_settings

    t0 = time.time()
    init_ray(cfg.address)
    ray_data_progress(False)
    listing = list_lake(cfg.input, 1, listing_budget(None))
    images = listing.images.count()
    if images == 0:
        raise NotFoundError(f"{cfg.input}: no image files among its {listing.files} files")
    print(f"fiqa faces: {images} photos listed ({time.time() - t0:.0f} s)", flush=True)
    face = face_stage_settings(cfg)
    resources = {"batch_size": cfg.batch_size, "num_cpus": 1, "batch_format": "pyarrow",
                 "memory": 500 * 2**20 + FACE_TASK_MEMORY}
    ds = listing.images.map_batches(read_batch, fn_kwargs={"threads": cfg.read_threads},
                                    **resources)
    ds = ds.map_batches(crops_batch, fn_kwargs={
        "output": cfg.output, "base": _base(cfg.input), "face": face,
        "max_pixels": cfg.max_pixels, "fmt": cfg.format}, **resources)
    rows = _write_rows(ds, storage.join(cfg.output, ROWS), images, t0)
    lease.check()  # still ours: removing strays and committing
    removed = _remove_strays(cfg.output, set(pc.drop_null(rows.column("crop")).to_pylist()))
    by_status = {s["values"]: s["counts"] for s in pc.value_counts(rows.column("status"))
                 .to_pylist()}
    summary = {"settings": cfg.identity(), "images": images,
               "photos": pc.count_distinct(rows.column("path")).as_py(),
               "rows": rows.num_rows, "faces_found": by_status.get("ok", 0),
               "by_status": by_status, "crops": storage.join(cfg.output, CROPS),
               "rows_file": ROWS, "stray_crops_removed": removed,
               "seconds": round(time.time() - t0, 1)}
    if summary["photos"] != images:
        raise JobFailed(f"{summary['photos']} photos have rows, {images} were listed: nothing "
                        "was committed; run it again")
    lease.check()
    storage.write_bytes(storage.join(cfg.output, MARKER), json.dumps(summary, indent=2).encode())
    unreadable = sum(v for k, v in by_status.items() if k not in ("ok", "no_face"))
    print(f"fiqa faces: {summary['faces_found']} faces of {images} photos "
          f"({by_status.get('no_face', 0)} without a face, {unreadable} not readable) -> "
          f"{summary['crops']}, {storage.join(cfg.output, ROWS)} ({summary['seconds']:.0f} s)",
          flush=True)
    return summary


def _write_rows(ds, uri: str, images: int, t0: float) -> pa.Table:
    """Every row of ``ds``, streamed into one Parquet file at ``uri``, with progress."""
    tables, photos, last = [], 0, time.time()
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        tables.append(table)
        photos += pc.count_distinct(table.column("path")).as_py()
        if time.time() - last > 10:
            last = time.time()
            print(f"fiqa faces: {photos} of {images} photos ({time.time() - t0:.0f} s)",
                  flush=True)
    rows = pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
    rows = rows.sort_by([("path", "ascending"), ("face", "ascending")])
    buf = io.BytesIO()
    pq.write_table(rows, buf)
    storage.write_bytes(uri, buf.getvalue())
    return rows


def _remove_strays(output: str, kept: set[str]) -> int:
    """Remove files under ``<output>/crops`` that the rows do not name (an earlier
    attempt's crops, a write's leftover temporary file); how many."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(storage.join(output, CROPS))
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return 0
    kept = {fs._strip_protocol(u) for u in kept}  # as find names them (local: absolute)
    strays = [p for p in found if fs._strip_protocol(p) not in kept]
    for p in strays:
        fs.rm_file(p)
    return len(strays)


def main(args: argparse.Namespace) -> int:
    return run_job("fiqa faces",
                   lambda: run(resolve_config(FacesConfig, args.config, overrides_of(args))))


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
