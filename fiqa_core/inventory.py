"""Tables of a lake's files instead of a listing: S3 Inventory reports and manifests of
your own (no Ray here).

Both give rows of ``path`` and the facts a listing records (:func:`fiqa_core.lake.facts`):
``size`` (int bytes), ``mtime`` (float seconds since the epoch, from whole microseconds, as
``datetime.timestamp()`` gives it) and ``etag`` (quotes stripped), in exactly a listing's
form, so a night planned from one reuses the scores of a night planned from the other.

An S3 Inventory report is found by its ``manifest.json``, at
``<dest-prefix>/<source-bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json`` in the
destination bucket; its ``files`` are data keys ``<dest-prefix>/<source-bucket>/<config-id>/
data/<uuid>.csv.gz`` (``.orc``, ``.parquet``) of that bucket. A manifest read from anywhere
else (a copy of the inventory) has its data files looked up below the folder above its own
folder, which stands for ``<dest-prefix>/<source-bucket>/<config-id>/``: a copy keeps the
layout from the config folder down.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote_plus

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .errors import InputError, NotFoundError
from .manifest import _stream, facts_table

MANIFEST_JSON = "manifest.json"
FORMATS = ("CSV", "ORC", "Parquet")
MANIFEST_FIELDS = ("sourceBucket", "destinationBucket", "fileFormat", "fileSchema", "files")
# the inventory's columns fiqa reads (names as in ORC and Parquet; CSV's are mapped to them)
INVENTORY_COLUMNS = ("bucket", "key", "is_latest", "is_delete_marker", "size",
                     "last_modified_date", "e_tag")


@dataclass(frozen=True)
class Inventory:
    """An S3 Inventory report, as its ``manifest.json`` describes it."""

    manifest: str  # the manifest.json's URI
    source_bucket: str
    file_format: str  # one of FORMATS
    columns: tuple[str, ...]  # fileSchema's names, snake_case (CSV: in the files' order)
    files: tuple[tuple[str, int | None], ...]  # (URI, size in bytes) of each data file


# -- S3 Inventory -----------------------------------------------------------------------------


def inventory_manifest(uri: str) -> str | None:
    """The ``manifest.json`` that ``uri`` names (itself, or the S3 Inventory manifest in the
    folder it names); None when it names neither."""
    if posixpath.basename(uri.rstrip("/")) == MANIFEST_JSON:
        return uri.rstrip("/")
    if any(ch in uri for ch in "*?["):
        return None  # a glob
    candidate = storage.join(uri, MANIFEST_JSON)
    if not storage.exists(candidate):
        return None
    try:  # a folder of images may hold a manifest.json of its own: then it is listed
        found = json.loads(storage.read_bytes(candidate))
    except ValueError:
        return None
    is_inventory = isinstance(found, dict) and all(f in found for f in MANIFEST_FIELDS)
    return candidate if is_inventory else None


def load_inventory(uri: str) -> Inventory:
    """Read and check ``manifest.json``; its data files resolved (as the module says)."""
    try:
        manifest = json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        raise NotFoundError(f"{uri}: S3 Inventory manifest not found") from None
    except ValueError as e:
        raise InputError(f"{uri}: not JSON ({e}); an S3 Inventory manifest.json is") from None
    have = ", ".join(manifest) if isinstance(manifest, dict) else type(manifest).__name__
    missing = [f for f in MANIFEST_FIELDS if not isinstance(manifest, dict) or f not in manifest]
    if missing:
        raise InputError(
            f"{uri}: not an S3 Inventory manifest: {', '.join(missing)} missing (have: "
            f"{have}); give the manifest.json of an inventory report, or a glob "
            "(<folder>/**) to list a folder that holds another manifest.json"
        )
    fmt = {f.lower(): f for f in FORMATS}.get(str(manifest["fileFormat"]).lower())
    if fmt is None:
        raise InputError(f"{uri}: fileFormat {manifest['fileFormat']!r} is not one of "
                         f"{', '.join(FORMATS)}")
    columns = schema_columns(fmt, str(manifest["fileSchema"]))
    if "key" not in columns:
        raise InputError(f"{uri}: the fileSchema has no key column (have: "
                         f"{', '.join(columns)}); an inventory lists objects by key")
    files = manifest["files"]
    if not isinstance(files, list) or not all(isinstance(f, dict) and "key" in f for f in files):
        raise InputError(f"{uri}: 'files' must be a list of {{\"key\": ..., \"size\": ...}}")
    dest = str(manifest["destinationBucket"]).removeprefix("arn:aws:s3:::")
    return Inventory(
        manifest=uri,
        source_bucket=str(manifest["sourceBucket"]),
        file_format=fmt,
        columns=columns,
        files=tuple((data_file_uri(uri, dest, f["key"]), f.get("size")) for f in files),
    )


def schema_columns(fmt: str, schema: str) -> tuple[str, ...]:
    """The column names of a ``fileSchema``, snake_case: CSV's ``Bucket, Key, ETag`` are
    ``bucket, key, e_tag``, the names of ORC's ``struct<...>`` and Parquet's message."""
    if fmt == "CSV":
        names = [n.strip() for n in schema.split(",") if n.strip()]
    elif fmt == "ORC":
        names = re.findall(r"([A-Za-z_]\w*)\s*:", schema.partition("<")[2])
    else:
        names = re.findall(r"\b(?:required|optional|repeated)\s+\w+\s+(\w+)", schema)
    return tuple(_snake(n) for n in names)


def _snake(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return name.lower()


def data_file_uri(manifest: str, dest_bucket: str, key: str) -> str:
    """Where a data file of the manifest is: ``s3://<dest bucket>/<key>`` for a manifest in
    its destination bucket, else below the folder above the manifest's (its config folder)."""
    if manifest.startswith(f"s3://{dest_bucket}/"):
        return f"s3://{dest_bucket}/{key}"
    config_folder = posixpath.dirname(posixpath.dirname(manifest))
    return storage.join(config_folder, *key.split("/")[-2:])  # data/<uuid>.<ext>


def check_files(inv: Inventory) -> None:
    """Every data file is there, of the size the manifest gives: one listing per folder."""
    by_folder: dict[str, list[tuple[str, int | None]]] = {}
    for uri, size in inv.files:
        by_folder.setdefault(posixpath.dirname(uri), []).append((uri, size))
    for folder, files in by_folder.items():
        fs, path = fsspec.core.url_to_fs(folder)
        try:
            found = {info["name"].rstrip("/"): info.get("size") for info in fs.ls(path, True)}
        except FileNotFoundError:
            found = {}
        for uri, size in files:
            have = found.get(fsspec.core.url_to_fs(uri)[1].rstrip("/"), -1)
            if have == -1:
                raise NotFoundError(f"{uri}: data file of {inv.manifest} not found (a copy of "
                                    "the inventory keeps the config folder's data/ beside "
                                    "the manifest's folder)")
            if size is not None and have is not None and int(have) != int(size):
                raise InputError(f"{uri}: {have} bytes, {inv.manifest} says {size}: a partial "
                                 "copy? copy the inventory's data files again")


def read_inventory_file(inv: Inventory, uri: str) -> Iterator[pa.Table]:
    """The rows of one data file (latest versions only, no delete markers), in batches."""
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        for table in _inventory_batches(inv, f, uri):
            yield inventory_rows(table, inv.source_bucket, url_encoded=inv.file_format == "CSV")


def _inventory_batches(inv: Inventory, f, uri: str) -> Iterator[pa.Table]:
    if inv.file_format == "CSV":
        import pyarrow.csv as pacsv

        # no header, every field quoted: all read as strings, empty ones as nulls
        keep = [c for c in INVENTORY_COLUMNS if c in inv.columns]
        reader = pacsv.open_csv(
            _stream(f, uri),
            read_options=pacsv.ReadOptions(column_names=list(inv.columns)),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in keep}, include_columns=keep,
                strings_can_be_null=True, null_values=[""]),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])
        return
    if inv.file_format == "Parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(f)
        keep = _present(pf.schema_arrow.names, uri)
        for batch in pf.iter_batches(columns=keep):
            yield pa.Table.from_batches([batch])
        return
    import pyarrow.orc as orc

    of = orc.ORCFile(f)
    keep = _present(of.schema.names, uri)
    for i in range(of.nstripes):
        yield pa.Table.from_batches([of.read_stripe(i, columns=keep)])


def _present(names: list[str], uri: str) -> list[str]:
    if "key" not in names:
        raise InputError(f"{uri}: no key column (have: {', '.join(names)})")
    return [c for c in INVENTORY_COLUMNS if c in names]


def inventory_rows(table: pa.Table, source_bucket: str, url_encoded: bool) -> pa.Table:
    """Inventory columns -> ``path``/facts rows. Rows of older versions and delete markers
    are dropped, and so are folder markers (keys ending in ``/``), which a listing skips."""
    names = table.column_names
    if "is_latest" in names:
        table = table.filter(pc.fill_null(_bool(table["is_latest"]), True))
    if "is_delete_marker" in names:
        table = table.filter(pc.invert(pc.fill_null(_bool(table["is_delete_marker"]), False)))
    keys = table["key"].to_pylist()
    if url_encoded:  # CSV keys are URL-encoded, spaces as '+'
        keys = [unquote_plus(k) for k in keys]
    buckets = table["bucket"].to_pylist() if "bucket" in names else [source_bucket] * len(keys)
    paths = pa.array([f"s3://{b or source_bucket}/{k}" for b, k in zip(buckets, keys,
                                                                         strict=True)],
                     pa.string())
    out = facts_table(paths, *(table[c] if c in names else None
                               for c in ("size", "last_modified_date", "e_tag")))
    return out.filter(pc.invert(pc.ends_with(out["path"], "/")))


def _bool(col) -> pa.ChunkedArray:
    if pa.types.is_boolean(col.type):
        return col
    return pc.equal(pc.utf8_lower(pc.cast(col, pa.string())), "true")
