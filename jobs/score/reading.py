"""Reading a partition's rows for planning: the run's own (held under its lease, whose
partial files and carried rows of an attempt before are removed) and the committed night
before (its files as its ``_SUCCESS`` lists them: only read, and any error reading one fails
the run, with nothing removed)."""

from __future__ import annotations

import json
import logging

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fiqa_core import storage
from fiqa_core.errors import InputError
from fiqa_core.tables import parquet_files

from .commit import MARKER
from .schema import FACE_COLUMNS, OUTPUT_SCHEMA

OPTIONAL = frozenset({"pipeline", *FACE_COLUMNS})  # columns a file from an older fiqa lacks

log = logging.getLogger("fiqa.score")
CARRY = "reused-"  # the name of a bucket's file of carried rows begins so


def committed_files(partition: str | None) -> dict[int, list[str]] | None:
    """A committed partition's Parquet files by bucket, as its ``_SUCCESS`` lists them
    (None when it lists none: written by an earlier fiqa, or no partition)."""
    if partition is None:
        return None
    return manifest_by_bucket(json.loads(storage.read_bytes(storage.join(partition, MARKER))))


def manifest_by_bucket(marker: dict) -> dict[int, list[str]] | None:
    """The Parquet files a ``_SUCCESS`` (read already) lists, by bucket; None when it lists
    none (written by an earlier fiqa)."""
    listed = marker.get("manifest")
    if listed is None:
        return None
    files: dict[int, list[str]] = {}
    for f in listed:
        folder = f["name"].split("/", 1)[0]
        if folder.startswith("bucket="):
            files.setdefault(int(folder.split("=", 1)[1]), []).append(f["name"])
    return files


def read_previous(partition: str | None, bucket: int, files: dict[int, list[str]] | None
                  ) -> pd.DataFrame:
    """One bucket's rows of the previous night: the files its ``_SUCCESS`` lists (checked
    against it before planning), so a file that has gone since (retention of another run
    removing that night meanwhile) fails the run, never a bucket silently read as empty
    and rescored. ``files`` None: a partition of an earlier fiqa, read by listing."""
    if partition is None or files is None:
        return read_bucket(partition, bucket)
    fs, root = fsspec.core.url_to_fs(partition)
    frames = []
    for name in files.get(bucket, []):
        path = f"{root.rstrip('/')}/{name}"
        try:
            frames.append(read_file(fs, path, None, own=False).to_pandas())
        except FileNotFoundError as e:
            raise InputError(
                f"{path}, of the night this one plans from, has gone since it was checked "
                f"against its {MARKER} (another run's retention, keep_nights, removing that "
                "night?). Nothing of this night is committed: run it again, and it plans "
                "from the newest complete night then"
            ) from e
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=OUTPUT_SCHEMA.names)


def drop_all_carried(out: str, files) -> int:
    """Remove the carried rows (``reused-*.parquet``) an interrupted attempt of this run
    wrote into its own partition (under its lease), of its file names
    (``commit.own_files``), in every bucket, also those no image of this listing falls in
    (one whose only image was deleted since): planning carries them again against this
    listing, so an image deleted or changed since leaves no stale row. How many files
    were removed."""
    carried = [n for n in files if n.rsplit("/", 1)[-1].startswith(CARRY)]
    for name in carried:
        storage.remove(storage.join(out, name))
    return len(carried)


def read_bucket(partition: str | None, bucket: int, columns=None, own: bool = False
                ) -> pd.DataFrame:
    """Rows already written for one bucket of a partition. ``own``: the run's own partition
    (held under its lease), whose partial files are removed; of any other partition a file
    that cannot be read fails the run."""
    empty = pd.DataFrame(columns=columns or OUTPUT_SCHEMA.names)
    if partition is None:
        return empty
    fs, root = fsspec.core.url_to_fs(storage.join(partition, f"bucket={bucket}"))
    if not fs.exists(root):
        return empty
    frames = [read_file(fs, f, columns, own) for f in parquet_files(fs, root)]
    frames = [t.to_pandas() for t in frames if t is not None]
    return pd.concat(frames, ignore_index=True) if frames else empty


def read_file(fs, path: str, columns, own: bool, remove: bool = True) -> pa.Table | None:
    """One Parquet file (of ``columns``, those it has: a file written before rows carried
    a ``pipeline`` or ``face_*`` columns lacks them); None for a partial file of the run's
    own partition (removed when ``remove``). Store errors (already retried by the client)
    propagate."""
    try:
        if columns is not None and OPTIONAL.intersection(columns):
            names = pq.read_schema(path, filesystem=fs).names
            columns = [c for c in columns if c in names]
        return pq.read_table(path, filesystem=fs, columns=columns)
    except pa.ArrowInvalid as e:
        if not own or not is_partial(fs, path):
            raise InputError(
                f"{path} cannot be read ({e}), yet its footer is in place, so it is not "
                "a file cut short by a write. Nothing was changed. The file was damaged "
                "after it was written: restore it, or move its partition aside, and run "
                "again"
            ) from e
        if remove:
            log.warning("removing %s: a Parquet file cut short by an interrupted write (%s); "
                        "its rows are scored again", path, e)
            fs.rm(path)
        return None


def is_partial(fs, path: str) -> bool:
    """Whether a file is provably not a whole Parquet file: the magic bytes missing at
    either end, or a footer longer than the file. Read errors propagate."""
    size = int(fs.info(path)["size"])
    if size < 12:
        return True
    head = fs.cat_file(path, start=0, end=4)
    tail = fs.cat_file(path, start=size - 8, end=size)
    return not storage.parquet_tail_ok(size, head, tail)
