"""Manifests of your own (a table of the lake's files: Parquet, or CSV with a header,
columns named by ``manifest_columns``), and the facts in a listing's form, which
:mod:`fiqa_core.inventory` gives its rows too (no Ray here)."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, InputError, NotFoundError
from .listers import FACT_COLUMNS, FILES_SCHEMA

FACTS = FACT_COLUMNS
ROWS_SCHEMA = FILES_SCHEMA  # the rows of a manifest are a listing's rows
MS_SECONDS = 1e11  # seconds reach 1e11 in the year 5138: larger "seconds" are milliseconds


def _stream(f, uri: str):
    stream = pa.PythonFile(f, mode="r")
    return pa.CompressedInputStream(stream, "gzip") if uri.endswith(".gz") else stream


# -- manifests of your own ----------------------------------------------------------------


def manifest_columns(spec: str | None) -> tuple[dict[str, str], set[str]]:
    """``manifest_columns`` (``path=uri,size=bytes,...``) -> (column of each fact, the facts
    named in it). Facts not named are read from columns named as the fact, when present."""
    columns = {"path": "path", **{f: f for f in FACTS}}
    named = set()
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        fact, sep, column = (s.strip() for s in item.partition("="))
        if not sep or not column or fact not in columns:
            raise ConfigError(
                f"manifest_columns: {item.strip()!r} is not fact=column with a fact among "
                f"{', '.join(columns)} (e.g. manifest_columns=path=uri,mtime=modified)"
            )
        columns[fact] = column
        named.add(fact)
    return columns, named


def manifest_files(uri: str) -> list[str]:
    """The files of a manifest: itself, or the Parquet files of a ``.parquet`` folder."""
    from .tables import parquet_files

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise NotFoundError(f"{uri}: manifest not found")
    if not fs.isdir(path):
        return [uri]
    return [fs.unstrip_protocol(p) if "://" in uri else p for p in parquet_files(fs, path)]


def check_manifest(uri: str, spec: str | None) -> dict[str, str]:
    """The column of each fact that the manifest has (``path`` always): a missing column
    that ``manifest_columns`` names, or no path column, is a :class:`ConfigError`."""
    columns, named = manifest_columns(spec)
    have = _manifest_schema(manifest_files(uri)[0])
    for fact in ("path", *sorted(named - {"path"})):
        if columns[fact] not in have:
            how = (f"manifest_columns names it for {fact}" if fact in named else
                   "name the paths' column with manifest_columns=path=<column>")
            raise ConfigError(f"{uri}: column {columns[fact]!r} missing (have: "
                              f"{', '.join(have)}); {how}")
    return {fact: c for fact, c in columns.items() if c in have}


def _manifest_schema(uri: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        if _is_csv(uri):
            import pyarrow.csv as pacsv

            return pacsv.open_csv(_stream(f, uri)).schema.names
        import pyarrow.parquet as pq

        return pq.ParquetFile(f).schema_arrow.names


def _is_csv(uri: str) -> bool:
    return uri.lower().endswith((".csv", ".csv.gz"))


def read_manifest_file(uri: str, columns: dict[str, str]) -> Iterator[pa.Table]:
    """The rows of one manifest file, in batches; ``columns``: from :func:`check_manifest`."""
    fs, path = fsspec.core.url_to_fs(uri)
    wanted = list(dict.fromkeys(columns.values()))
    with fs.open(path, "rb") as f:
        if _is_csv(uri):
            import pyarrow.csv as pacsv

            reader = pacsv.open_csv(_stream(f, uri), convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in wanted}, include_columns=wanted,
                strings_can_be_null=True, null_values=[""]))
            batches = (pa.Table.from_batches([b]) for b in reader)
        else:
            import pyarrow.parquet as pq

            batches = (pa.Table.from_batches([b])
                       for b in pq.ParquetFile(f).iter_batches(columns=wanted))
        for table in batches:
            yield facts_table(pc.cast(table[columns["path"]], pa.string()),
                              *(table[columns[c]] if c in columns else None for c in FACTS))


# -- the facts in a listing's form ----------------------------------------------------------


def facts_table(path, size, mtime, etag) -> pa.Table:
    """Rows of ``path`` and the facts from columns of any type (None: all null). A row
    without a path is refused: it names no file to score."""
    n = len(path)
    empty = pc.sum(pc.or_kleene(pc.is_null(path), pc.equal(pc.cast(path, pa.string()), "")))
    if (empty.as_py() or 0) > 0:
        raise InputError(f"{empty.as_py()} manifest row(s) without a path: give every row "
                         "the file it lists")
    return pa.table(
        {
            "path": path,
            "size": _or_nulls(size, n, pa.int64(), _size),
            "mtime": _or_nulls(mtime, n, pa.float64(), seconds),
            "etag": _or_nulls(etag, n, pa.string(), _etag),
        },
        schema=ROWS_SCHEMA,
    )


def _or_nulls(col, n: int, type_: pa.DataType, convert):
    return pa.nulls(n, type_) if col is None else convert(col)


def _size(col):
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), None, col)
    try:
        return pc.cast(col, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InputError(f"size: not whole numbers of bytes ({e})") from None


def _etag(col):
    col = pc.utf8_trim(pc.cast(col, pa.string()), '"')
    return pc.if_else(pc.equal(col, ""), None, col)


def seconds(col) -> pa.ChunkedArray | pa.Array:
    """Seconds since the epoch, as a listing gives them, from numbers (seconds), Arrow
    timestamps or ISO 8601 strings (no zone: UTC)."""
    if pa.types.is_timestamp(col.type):
        us = pc.cast(col, pa.timestamp("us", col.type.tz), safe=False)
        return pc.divide(pc.cast(pc.cast(us, pa.int64()), pa.float64()), 1e6)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        secs = pc.cast(col, pa.float64())
        top = pc.max(secs).as_py()
        if top is not None and top > MS_SECONDS:
            raise InputError(f"mtime: {top:.0f} is not seconds since the epoch (milliseconds? "
                             "divide by 1000)")
        return secs
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            return seconds(pc.cast(col, pa.float64()))
        except pa.ArrowInvalid:
            return seconds(_timestamps(col))
    raise InputError(f"mtime: a column of {col.type} is neither seconds nor a timestamp")


def _timestamps(col) -> pa.Array:
    try:
        return pc.cast(col, pa.timestamp("us", "UTC"))
    except pa.ArrowInvalid:  # no zone, or mixed: pandas reads every ISO 8601 form
        import pandas as pd

        try:
            ts = pd.to_datetime(col.to_pandas(), utc=True, format="ISO8601")
        except (ValueError, TypeError) as e:
            raise InputError(f"mtime: neither seconds nor ISO 8601 timestamps ({e})") from None
        return pa.array(ts.astype("datetime64[us, UTC]"), pa.timestamp("us", "UTC"))
