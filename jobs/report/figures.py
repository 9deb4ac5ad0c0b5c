"""A committed partition's figures (what ``_report.json`` holds), read bucket by bucket.

Memory follows one bucket, never the night: each bucket's rows (a few columns) are read
with the same bucket of the previous complete night, compared, summarised and dropped.
Counts are exact; score distributions keep a bounded sample (:mod:`fiqa_core.drift`).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from fiqa_core import storage
from fiqa_core.drift import Extremes, ScoreSummary, UniformSample, drift
from fiqa_core.metrics import srcc
from jobs.score.commit import MARKER, parquet_files
from jobs.score.reading import manifest_by_bucket, read_file
from jobs.score.schema import FACTS

COLUMNS = ["path", "face", "face_box", "score", "status", "error", "reused", "model",
           "pipeline", *FACTS]
EXAMPLES = 3  # paths shown per failure status
VERSION = 1


@dataclass(frozen=True)
class ReportSettings:
    threshold: float | None = None  # the share of scores below it is tracked
    tolerance: float = 1e-4  # a score moving more, facts and pipeline unchanged, is a bug
    gallery: int = 12  # worst and best faces shown
    movers: int = 12  # largest score changes shown after a model change


def read_bucket(partition: str, names: list[str]) -> pd.DataFrame:
    """A bucket's rows (the report's columns, those a file has) from the files
    ``_SUCCESS`` lists; a file that cannot be read is an error naming it."""
    fs, root = fsspec.core.url_to_fs(partition)
    frames = [read_file(fs, f"{root.rstrip('/')}/{n}", COLUMNS, own=False).to_pandas()
              for n in names]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    for c in COLUMNS:
        if c not in rows.columns:
            rows[c] = None
    return rows


def _marker(partition: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(partition, MARKER)))


def files_by_bucket(partition: str, marker: dict) -> dict[int, list[str]]:
    """A committed partition's Parquet files by bucket: as its ``_SUCCESS`` (``marker``)
    lists them, or (written by an earlier fiqa, no file list) as its bucket folders hold
    them."""
    listed = manifest_by_bucket(marker)
    if listed is not None:
        return listed
    fs, root = fsspec.core.url_to_fs(partition)
    found: dict[int, list[str]] = {}
    for path in parquet_files(partition):
        name = path[len(root.rstrip("/")):].lstrip("/")
        found.setdefault(int(name.split("/", 1)[0].split("=", 1)[1]), []).append(name)
    return found


def _same_facts(both: pd.DataFrame) -> np.ndarray:
    """Per joined row, whether the file's facts are the same in both nights."""
    same = np.ones(len(both), dtype=bool)
    for c in FACTS:
        x, y = both[f"{c}_now"], both[f"{c}_before"]
        same &= ((x == y) | (x.isna() & y.isna())).to_numpy(dtype=bool)
    return same


def _same_means(both: pd.DataFrame, default: str | None) -> np.ndarray:
    """Per joined row, whether both nights scored it by the same means: the same pipeline
    id; a row without one (written before rows carried one) was its model's default
    pipeline: the same when the model is, and the other row's pipeline is this night's
    ``default`` pipeline (from its ``_SUCCESS``; unknown: by model alone)."""
    now, before = both["pipeline_now"], both["pipeline_before"]
    same = (now == before).to_numpy(dtype=bool)
    model = (both["model_now"] == both["model_before"]).to_numpy(dtype=bool)
    old_before = before.isna().to_numpy(dtype=bool) & now.notna().to_numpy(dtype=bool)
    default_now = np.ones(len(both), dtype=bool) if default is None else (
        now == default).to_numpy(dtype=bool)
    old_both = (before.isna() & now.isna()).to_numpy(dtype=bool)
    return same | (model & ((old_before & default_now) | old_both))


class _Night:
    """What is streamed over one night's buckets."""

    def __init__(self, s: ReportSettings, seed: int):
        self.scores = ScoreSummary(threshold=s.threshold, seed=seed)
        self.by_status: dict[str, int] = {}
        self.examples: dict[str, list] = {}
        self.models: dict[str, int] = {}
        self.pipelines: set[str] = set()
        self.rows = self.reused = 0

    def add(self, rows: pd.DataFrame) -> None:
        self.rows += len(rows)
        self.reused += int(rows["reused"].fillna(False).astype(bool).sum())
        for status, n in rows["status"].value_counts().items():
            self.by_status[status] = self.by_status.get(status, 0) + int(n)
        for model, n in rows["model"].dropna().value_counts().items():
            self.models[model] = self.models.get(model, 0) + int(n)
        self.pipelines |= set(rows["pipeline"].dropna().unique())
        failed = rows[rows["status"] != "ok"].sort_values("path")
        for status, group in failed.groupby("status"):
            kept = self.examples.setdefault(status, [])
            kept += [{"path": p, "error": e} for p, e in zip(group["path"], group["error"],
                                                              strict=True)]
            kept.sort(key=lambda r: r["path"])
            del kept[EXAMPLES:]
        self.scores.add(rows.loc[rows["status"] == "ok", "score"].to_numpy(dtype=float))


@dataclass(frozen=True)
class Figures:
    """``data``: what ``_report.json`` holds; the samples behind its plots."""

    data: dict
    scores: ScoreSummary
    previous_scores: ScoreSummary | None
    pairs: UniformSample  # (previous, current) scores of images both pipelines scored


class _Comparison:
    """What is streamed over the images both nights scored: scores that moved while
    nothing did (same facts, same pipeline), and the pairs of images scored by two
    pipelines (a roll-out) with the largest movers."""

    def __init__(self, s: ReportSettings, default: str | None = None):
        self.s, self.default = s, default  # this night's default pipeline (_same_means)
        self.unexpected, self.examples, self.movers = 0, [], []
        self.pairs = UniformSample(width=2, seed=3)

    def add(self, now: pd.DataFrame, before: pd.DataFrame) -> None:
        # a row is an image's or (faces=all) one face's: -1 for the image itself
        both = _by_face(now).merge(_by_face(before), on=["path", "face"],
                                   suffixes=("_now", "_before"))
        change = (both["score_now"] - both["score_before"]).to_numpy(dtype=float)
        same = _same_means(both, self.default)
        moved = same & _same_facts(both) & (np.abs(change) > self.s.tolerance)
        self.unexpected += int(moved.sum())
        for p, f, b, c in zip(both.loc[moved, "path"], both.loc[moved, "face"],
                              both.loc[moved, "score_before"], both.loc[moved, "score_now"],
                              strict=True):
            if len(self.examples) < EXAMPLES:
                self.examples.append({**_named(p, f), "previous": b, "current": c})
        other = both[~same]
        self.pairs.add(other[["score_before", "score_now"]].to_numpy(dtype=float))
        if len(other) > self.s.movers:  # only rows that can enter the largest movers
            top = np.argsort(np.abs(change[~same]), kind="stable")[::-1][:self.s.movers]
            other = other.iloc[top]
        for p, f, b, c in zip(other["path"], other["face"], other["score_before"],
                              other["score_now"], strict=True):
            item = (abs(c - b), p, int(f), b, c)
            if len(self.movers) < self.s.movers:
                heapq.heappush(self.movers, item)
            elif item > self.movers[0]:
                heapq.heapreplace(self.movers, item)

    def model_change(self, now: _Night, before: _Night) -> dict | None:
        if not before.pipelines:  # a night from before pipeline ids: its model's default
            if set(now.models) == set(before.models) and (
                    self.default is None or now.pipelines <= {self.default}):
                return None
        elif now.pipelines == before.pipelines:
            return None
        return {"previous_models": sorted(before.models), "models": sorted(now.models),
                "pairs": self.pairs.count, "srcc": _srcc(self.pairs.rows),
                "largest_movers": [{**_named(p, f), "previous": b, "current": c,
                                    "change": c - b}
                                   for _, p, f, b, c in sorted(self.movers, reverse=True)]}


def _by_face(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(face=pd.to_numeric(rows["face"]).fillna(-1).astype("int64"))


def _named(path: str, face: int, box=None) -> dict:
    """How a row is named in the report: its path, and (a row of a photo's face, with
    faces=) the face's index and box in the photo's pixels."""
    if face < 0:
        return {"path": path}
    return {"path": path, "face": int(face),
            **({"face_box": [float(v) for v in box]} if box is not None else {})}


def _gallery_keys(ok: pd.DataFrame) -> list[tuple]:
    """(path, face, box) per scored row: unique, so ties never compare boxes (a row of a
    file written before rows had boxes: no box)."""
    rows = _by_face(ok)
    return [(p, int(f), tuple(b) if isinstance(b, (list, tuple, np.ndarray)) else None)
            for p, f, b in zip(rows["path"], rows["face"], rows["face_box"], strict=True)]


def _comparable(marker: dict, previous: str | None) -> dict[int, list[str]] | None:
    """The previous night's files by bucket, when its rows of a path are in the same
    bucket as this night's (``marker``: this night's ``_SUCCESS``; the same bucket count);
    else None."""
    if previous is None:
        return None
    before = _marker(previous)
    if before.get("buckets") != marker.get("buckets"):
        return None
    return files_by_bucket(previous, before)


def figures(partition: str, previous: str | None, s: ReportSettings | None = None
            ) -> Figures:
    """Every figure of ``partition`` (committed) against ``previous`` (the complete
    night before, or None): counts, failures, scores, drift, unexpected score changes,
    the model change and the worst and best faces."""
    s = s or ReportSettings()
    marker = _marker(partition)
    now_files, before_files = files_by_bucket(partition, marker), _comparable(marker, previous)
    now, before = _Night(s, seed=1), _Night(s, seed=2)
    extremes, compared = Extremes(s.gallery), _Comparison(s, marker.get("default_pipeline"))
    for bucket in sorted(set(now_files) | set(before_files or {})):
        rows = read_bucket(partition, now_files.get(bucket, []))
        now.add(rows)
        ok = rows[rows["status"] == "ok"]
        extremes.add(ok["score"].to_numpy(dtype=float), _gallery_keys(ok))
        if before_files is not None:
            old = read_bucket(previous, before_files.get(bucket, []))
            before.add(old)
            compared.add(ok, old[old["status"] == "ok"])
    result = {
        "report_version": VERSION,
        "partition": partition,
        "previous": previous if before_files is not None else None,
        "model": marker.get("model"),
        "pipeline": marker.get("pipeline"),
        "counts": _counts(now, marker),
        "failures": {k: {"count": now.by_status[k], "examples": now.examples.get(k, [])}
                     for k in sorted(now.by_status) if k != "ok"},
        "settings": {"threshold": s.threshold, "tolerance": s.tolerance},
        "scores": now.scores.figures(),
        "warnings": marker.get("warnings"),
        "worst": [{**_named(*key), "score": v} for key, v in extremes.lowest()],
        "best": [{**_named(*key), "score": v} for key, v in extremes.highest()],
        "drift": None, "unexpected_changes": None, "model_change": None,
    }
    if before_files is not None:
        result["previous_scores"] = before.scores.figures()
        result["drift"] = drift(now.scores, before.scores)
        result["unexpected_changes"] = {"count": compared.unexpected,
                                        "examples": compared.examples}
        result["model_change"] = compared.model_change(now, before)
    return Figures(result, now.scores, before.scores if before_files is not None else None,
                   compared.pairs)


def _srcc(pairs: np.ndarray) -> float | None:
    return srcc(pairs[:, 0], pairs[:, 1]) if len(pairs) >= 2 else None


def _counts(night: _Night, marker: dict) -> dict:
    """Counts over the rows read, beside what only ``_SUCCESS`` knows (time, skipped)."""
    return {
        "rows": night.rows,
        "images": marker.get("images", night.rows),
        "scored": night.rows - night.reused,
        "reused": night.reused,
        "failed": night.rows - night.by_status.get("ok", 0),
        "by_status": dict(sorted(night.by_status.items())),
        "skipped_non_image": marker.get("skipped_non_image"),
        "files": marker.get("files"),
        "seconds": marker.get("seconds"),
        "images_per_s": marker.get("images_per_s"),
        "models": dict(sorted(night.models.items())),
    }
