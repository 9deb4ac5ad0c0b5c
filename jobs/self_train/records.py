"""Stage records: ``<output>/stages/<stage>.json``, what a rerun reads to skip or resume."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from fiqa_core import storage
from jobs.train import work_dir

from .config import RoundConfig, layout

if TYPE_CHECKING:  # names only: stages.py names its runners, which read records
    from .stages import Stage


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def record_uri(cfg: RoundConfig, stage: str) -> str:
    return storage.join(layout(cfg)["stages"], f"{stage}.json")


def read_record(cfg: RoundConfig, stage: str) -> dict | None:
    uri = record_uri(cfg, stage)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def write_record(cfg: RoundConfig, record: dict) -> None:
    storage.write_bytes(record_uri(cfg, record["stage"]), json.dumps(record, indent=2).encode())


def is_done(cfg: RoundConfig, stage: Stage) -> bool:
    rec = read_record(cfg, stage.name)
    return (
        rec is not None
        and rec.get("status") == "done"
        and rec.get("key") == stage.key
        and all(storage.exists(p) for p in stage.outputs.values())
    )


def can_resume(stage: Stage, old: dict | None) -> bool:
    """The stage was interrupted (running) or failed under the same key: continue it."""
    return old is not None and old.get("status") in ("running", "failed") and (
        old.get("key") == stage.key
    )


def remove_outputs(stage: Stage, old: dict | None) -> None:
    """A stage's outputs (current and previously recorded) and a training run's state."""
    paths = set(stage.outputs.values()) | set((old or {}).get("outputs", {}).values())
    for path in sorted(paths):
        storage.remove(path)
        if stage.definition.model:
            storage.remove(work_dir(replace(stage.job, output=path)))
