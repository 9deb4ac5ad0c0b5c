"""Manifest inputs: a table of the lake's files instead of a listing.

Two kinds (parsed by :mod:`fiqa_core.inventory`), read in Ray tasks, one per file, each
streaming its file in batches, so no file list passes through the driver:

- an S3 Inventory report: its ``manifest.json``, or the folder holding it. Its data files
  (CSV, ORC or Parquet) are checked on the driver first (present, of the manifest's sizes);
- a manifest of your own: a ``.parquet`` file (or folder) or a ``.csv`` file with a header,
  with a ``path`` column and, when present, ``size``/``mtime``/``etag`` columns (the facts a
  listing records); ``manifest_columns`` names other columns.

Either way the rows carry the facts in a listing's form, so reuse across nights does not
depend on how a night's files were found.
"""

from __future__ import annotations

from fiqa_core import inventory, manifest

from .config import ScoreConfig

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


def is_manifest(cfg: ScoreConfig) -> bool:
    """Whether the input names a manifest rather than a folder, prefix or glob."""
    return (cfg.input.lower().rstrip("/").endswith(TABLE_SUFFIXES)
            or inventory.inventory_manifest(cfg.input) is not None)


def read_manifest(cfg: ScoreConfig):
    """The manifest's files as a Ray dataset of ``path`` and the facts (nulls where absent)."""
    found = inventory.inventory_manifest(cfg.input)
    if found is None:
        columns = manifest.check_manifest(cfg.input, cfg.manifest_columns)
        return _read_files(manifest.manifest_files(cfg.input), _manifest_rows,
                           {"columns": columns})
    inv = inventory.load_inventory(found)
    if cfg.manifest_columns:
        print(f"fiqa: manifest_columns is for manifests of your own; {found} is an S3 "
              "Inventory report, read by its own schema", flush=True)
    inventory.check_files(inv)
    return _read_files([uri for uri, _ in inv.files], _inventory_rows, {"inv": inv})


def _read_files(files: list[str], fn, kwargs: dict):
    import ray

    if not files:
        return ray.data.from_arrow(manifest.ROWS_SCHEMA.empty_table())
    items = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
    return items.map_batches(fn, fn_kwargs=kwargs, batch_size=1, batch_format="pyarrow")


def _inventory_rows(batch, inv: inventory.Inventory):
    for uri in batch["file"].to_pylist():
        yield from inventory.read_inventory_file(inv, uri)


def _manifest_rows(batch, columns: dict[str, str]):
    for uri in batch["file"].to_pylist():
        yield from manifest.read_manifest_file(uri, columns)
