"""A partition's commit, ``_SUCCESS``, and checking a committed partition against it.

``_SUCCESS`` lists the partition's Parquet files (name relative to the partition, size in
bytes, rows). A committed partition is read-only: no run writes or removes anything in
it. Before a night reuses rows from an earlier one it checks that partition's files
against its ``_SUCCESS`` (a listing, no reads); one that does not match is reported and
not reused. ``fiqa verify`` runs the same check over every committed partition.
"""

from __future__ import annotations

import json
import logging

import fsspec
import pyarrow.parquet as pq

from fiqa_core import storage

log = logging.getLogger("fiqa.score")
MARKER = "_SUCCESS"
RETIRED = "_RETIRED"  # a partition that retention (keep_nights) is removing
NOT_DATA = "_"  # bookkeeping (_SUCCESS, _LEASE*, test markers), as Parquet readers skip it


def data_files(partition: str) -> dict[str, int]:
    """Every file of a partition that is not bookkeeping: relative name -> size. A
    partition is its root's own files and its ``bucket=`` folders; other folders (the
    ``date=`` partitions of an output that is also a pseudo-label output) are not its own."""
    fs, root = fsspec.core.url_to_fs(partition)
    root = root.rstrip("/")
    if not fs.exists(root):
        return {}
    found = {}
    for entry in fs.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "directory":
            if name.startswith("bucket="):
                for path, info in fs.find(entry["name"], detail=True).items():
                    rel = path[len(root):].lstrip("/")
                    if info.get("type", "file") == "file" and rel and not rel.endswith("/"):
                        found[rel] = int(info.get("size") or 0)
        elif name and not name.startswith(NOT_DATA):
            found[name] = int(entry.get("size") or 0)
    return found


def own_files(partition: str) -> tuple[dict[str, int], int]:
    """A run's own partition's files (:func:`data_files`), listed once, after removing
    what interrupted local writes left (hidden ``.<name>.parquet.<id>.tmp`` files, never
    published under their names); with how many were removed. Under the run's lease only."""
    files = data_files(partition)
    left = [n for n in files if storage.is_temporary(n)]
    for name in left:
        storage.remove(storage.join(partition, name))
        del files[name]
    return files, len(left)


def parquet_files(partition: str, files: dict[str, int] | None = None) -> list[str]:
    """The partition's Parquet files (in its ``bucket=`` folders), as paths on its
    filesystem, sorted; of ``files`` (:func:`data_files`) when listed already."""
    fs, root = fsspec.core.url_to_fs(partition)
    names = data_files(partition) if files is None else files
    return sorted(f"{root.rstrip('/')}/{n}" for n in names
                  if n.startswith("bucket=") and n.endswith(".parquet"))


def manifest(sizes: dict[str, int], rows: dict[str, int]) -> list[dict]:
    """The ``_SUCCESS`` file list: each Parquet file's name, size (of ``sizes``, from
    :func:`data_files`) and rows."""
    return [{"name": n, "size": sizes[n], "rows": rows[n]} for n in sorted(rows)]


def read_marker(partition: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(partition, MARKER)))


def footer_rows(partition: str, names) -> dict[str, int]:
    fs, root = fsspec.core.url_to_fs(partition)
    return {n: pq.read_metadata(f"{root.rstrip('/')}/{n}", filesystem=fs).num_rows
            for n in names}


def verify(partition: str, rows: bool = False) -> dict:
    """What differs between a committed partition's files and its ``_SUCCESS``; {} when
    they match. ``rows``: also read each file's footer and compare its row count.

    A ``_SUCCESS`` from before fiqa listed files is checked by its file and row counts.
    """
    try:
        summary = read_marker(partition)
    except ValueError as e:  # not JSON: damaged like a missing file, never a crash
        return {"marker": f"{MARKER} cannot be read ({e})"}
    found = data_files(partition)
    listed = summary.get("manifest")
    if listed is None:  # written by an earlier fiqa: counts only
        parquet = [n for n in found if n.endswith(".parquet")]
        counted = sum(footer_rows(partition, parquet).values())
        problems = {}
        if len(parquet) != summary.get("files") or counted != summary.get("rows"):
            problems["counts"] = (f"{len(parquet)} files and {counted} rows, _SUCCESS says "
                                  f"{summary.get('files')} and {summary.get('rows')}")
        return problems
    expected = {f["name"]: f for f in listed}
    problems = {
        "missing": sorted(set(expected) - set(found)),
        "extra": sorted(set(found) - set(expected)),
        "size_differs": [
            {"name": n, "expected": expected[n]["size"], "found": found[n]}
            for n in sorted(set(expected) & set(found)) if expected[n]["size"] != found[n]
        ],
    }
    if rows:
        present = [n for n in sorted(set(expected) & set(found))]
        counts = footer_rows(partition, present)
        problems["rows_differ"] = [
            {"name": n, "expected": expected[n]["rows"], "found": counts[n]}
            for n in present if counts[n] != expected[n]["rows"]
        ]
    return {k: v for k, v in problems.items() if v}


def describe(problems: dict) -> str:
    """One line naming what differs (the first few names of each kind)."""
    parts = []
    for kind, items in problems.items():
        if isinstance(items, str):
            parts.append(f"{kind}: {items}")
            continue
        names = [i["name"] if isinstance(i, dict) else i for i in items]
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"{len(names)} {kind.replace('_', ' ')} ({', '.join(names[:3])}{more})")
    return "; ".join(parts)


def committed(output: str) -> list[str]:
    """Every committed partition of an output: the output itself (a pseudo-label run) and
    each ``date=`` folder with a ``_SUCCESS``, oldest first."""
    parts = [output] if storage.exists(storage.join(output, MARKER)) else []
    for name in dates(output):
        part = storage.join(output, name)
        if storage.exists(storage.join(part, MARKER)):
            parts.append(part)
    return parts


def dates(output: str) -> list[str]:
    """The ``date=`` folder names under a nightly output, sorted."""
    fs, root = fsspec.core.url_to_fs(output)
    if not fs.exists(root):
        return []
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    return sorted(n for n in names if n.startswith("date="))


def previous_partition(output: str, current: str) -> tuple[str | None, list[dict]]:
    """The latest committed partition before ``current`` whose files match its
    ``_SUCCESS``, and the committed ones passed over because they did not (each named,
    with what differs, in a warning). Store errors raise: never a silent fallback."""
    this = current.rstrip("/").rsplit("/", 1)[-1]
    damaged = []
    for name in reversed([d for d in dates(output) if d < this]):
        part = storage.join(output, name)
        if not storage.exists(storage.join(part, MARKER)) or storage.exists(
                storage.join(part, RETIRED)):
            continue
        problems = verify(part)
        if not problems:
            return part, damaged
        log.warning("%s does not match its %s: %s. Not reused, and left as it is (check it "
                    "with: fiqa verify output=%s)", part, MARKER, describe(problems), output)
        damaged.append({"partition": part, **problems})
    return None, damaged
