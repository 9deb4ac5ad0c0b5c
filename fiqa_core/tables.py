"""Label and score tables: reading, validating and splitting (pandas; no Ray).

Contracts (DESIGN.md): labels have ``path`` and ``score`` (optional ``split``: train/val);
pseudo-label shards have ``path``, ``score`` (calibrated), ``raw_score``, ``model``,
``status``, ``error`` and file facts.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import storage
from .errors import InputError

LABEL_COLUMNS = ("path", "score")
PSEUDO_COLUMNS = ("path", "score", "status")


class TableError(InputError):
    """A label or shard table cannot be used as given; the message says what to fix."""


def _is_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/")


def resolve_path(path: str, root: str) -> str:
    """Relative paths are taken relative to ``root`` (a directory path or URI)."""
    return path if _is_absolute(path) else storage.join(root, path)


def _read_table(uri: str) -> pd.DataFrame:
    lower = uri.lower().rstrip("/")
    if not storage.exists(uri):
        raise TableError(f"{uri}: labels table not found")
    if lower.endswith(".csv") or lower.endswith(".csv.gz"):
        with fsspec.open(uri, "rb", compression="infer") as f:
            return pd.read_csv(f)
    if lower.endswith((".parquet", ".pq")) or storage.isdir(uri):
        fs, path = fsspec.core.url_to_fs(uri)
        return pq.read_table(path, filesystem=fs).to_pandas()
    raise TableError(f"{uri}: unknown table format (use .csv, .parquet or a Parquet folder)")


def read_labels(uri: str, images_root: str | None = None) -> pd.DataFrame:
    """Read and validate a labels table; returns ``path`` (absolute), ``score`` (+``split``).

    Args:
        uri: CSV or Parquet file (or Parquet folder), local or fsspec URI.
        images_root: Directory that relative paths are relative to; default: the table's own.

    Raises:
        TableError: missing columns, non-numeric or missing scores, duplicate or empty paths.
    """
    df = _read_table(uri)
    name = posixpath.basename(uri.rstrip("/"))
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(
            f"{name}: column {missing[0]!r} missing (have: {', '.join(map(str, df.columns))}); "
            "a labels table needs 'path' and 'score'"
        )
    if df.empty:
        raise TableError(f"{name}: the labels table has no rows")
    scores = pd.to_numeric(df["score"], errors="coerce")
    bad = df.index[scores.isna() | ~np.isfinite(scores.fillna(0))]
    if len(bad):
        i = bad[0]
        row = i + 2 if name.endswith(".csv") else i  # CSV: 1-based, after the header line
        raise TableError(
            f"{name}: {len(bad)} score(s) are not numbers, first at row {row} "
            f"({df.at[i, 'path']!r}: {df.at[i, 'score']!r}); fix or remove those rows"
        )
    paths = df["path"].astype("string")
    if paths.isna().any() or (paths.str.strip() == "").any():
        raise TableError(
            f"{name}: {int((paths.isna() | (paths.str.strip() == '')).sum())} row(s) have no path"
        )
    root = images_root or posixpath.dirname(uri.rstrip("/")) or "."
    out = pd.DataFrame(
        {"path": [resolve_path(p, root) for p in paths], "score": scores.astype("float64")}
    )
    dup = out["path"][out["path"].duplicated()]
    if len(dup):
        raise TableError(
            f"{name}: {len(dup)} duplicate path(s), e.g. {dup.iloc[0]!r}; each image once, please"
        )
    if "split" in df.columns:
        split = df["split"].astype("string").str.lower()
        odd = sorted(set(split.dropna()) - {"train", "val"})
        if odd or split.isna().any():
            raise TableError(
                f"{name}: column 'split' must be 'train' or 'val' (found {odd or 'empty'})"
            )
        out["split"] = split.to_numpy()
    return out


def split_labels(labels: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Add a ``split`` column (train/val): kept if the table has one, else a seeded split.

    The split depends only on the set of paths and the seed, not on row order.
    """
    if "split" in labels.columns:
        return labels
    if not 0 < val_fraction < 1:
        raise TableError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    val = seeded_subset(labels["path"], val_fraction, seed)
    return labels.assign(split=np.where(val, "val", "train").astype(object))


def parquet_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """Parquet files below ``root`` on ``fs`` (recursively), sorted; [] when there are none."""
    return sorted(p for p in fs.find(root) if p.endswith(".parquet"))


def list_parquet_files(uri: str) -> list[str]:
    """Parquet files under a shard folder (recursively), as full URIs, sorted."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise TableError(f"{uri}: pseudo-label folder not found")
    files = parquet_files(fs, path)
    if not files:
        raise TableError(f"{uri}: no .parquet shards in this folder")
    return [fs.unstrip_protocol(p) if "://" in uri else p for p in files]


def check_shard_schema(uri: str, faces: str = "none") -> None:
    """Fail early, naming the file, when a shard lacks the pseudo-label columns, or (when
    training on face crops, ``faces`` none) holds scores of faces found in photos."""
    first = list_parquet_files(uri)[0]
    fs, path = fsspec.core.url_to_fs(first)
    names = pq.read_schema(path, filesystem=fs).names
    missing = [c for c in PSEUDO_COLUMNS if c not in names]
    if missing:
        raise TableError(
            f"{first}: column {missing[0]!r} missing (have: {', '.join(names)}); "
            "pseudo-label shards are written by `fiqa pseudo-label`"
        )
    mfs, marker = fsspec.core.url_to_fs(posixpath.join(uri.rstrip("/"), "_SUCCESS"))
    written = json.loads(mfs.cat_file(marker)).get("faces") if mfs.exists(marker) else None
    if written is None and "face" in names:  # a _SUCCESS from before it said: the rows do
        face = pq.read_table(path, filesystem=fs, columns=["face"])["face"]
        written = "largest or all" if face.null_count < len(face) else "none"
    if written not in (None, "none") and faces == "none":  # faces in photos as whole photos
        raise TableError(
            f"{uri} was pseudo-labeled with faces={written}: its scores are of faces found "
            "in the photos, and with faces=none fiqa train reads each path as one face "
            "image, so it would learn the faces' scores on whole photos. Train with "
            "faces=largest (each row aligned by its face's landmarks)"
        )


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file, or every Parquet file below a folder, as one frame.

    Folders are read file by file: pyarrow's dataset discovery through s3fs mistakes an
    object store's folder-marker keys for files.
    """
    files = [uri] if uri.lower().endswith(".parquet") else list_parquet_files(uri)
    frames = []
    for f in files:
        fs, path = fsspec.core.url_to_fs(f)
        frames.append(pq.read_table(path, filesystem=fs, columns=columns).to_pandas())
    return pd.concat(frames, ignore_index=True)


def write_parquet(df: pd.DataFrame, uri: str) -> None:
    """Write one Parquet file (atomically on local disks)."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())


def seeded_subset(paths: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing ``round(len * fraction)`` (at least 1) rows.

    Depends only on the set of paths and the seed, not on row order.
    """
    order = np.argsort(paths.to_numpy(), kind="stable")
    perm = np.random.default_rng(seed).permutation(len(paths))
    chosen = np.zeros(len(paths), dtype=bool)
    chosen[order[perm[: max(1, int(round(len(paths) * fraction)))]]] = True
    return chosen
