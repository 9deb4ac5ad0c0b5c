"""Fault injection for the recovery tests: a test hook, never a setting a user sees.

A test arms a fault for the runs inside a ``with`` block; the job's driver reads what is
armed (:func:`armed`) and hands it to its remote code (scoring actors, training workers)
as an argument, so the hook works in Ray worker processes too::

    with faults.inject(score_actor_dies_after_batches=1):
        score.run(cfg, nightly=False)

Faults:
    score_actor_dies_after_batches: a scoring actor's process exits after this many batches,
        once per output (a marker file in the output records that it happened).
    train_fails_at_epoch: training worker 0 raises at the start of this epoch (1-based),
        once per work dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

KNOWN = ("score_actor_dies_after_batches", "train_fails_at_epoch")
_armed: dict[str, int] = {}


@contextmanager
def inject(**faults: int) -> Iterator[None]:
    unknown = set(faults) - set(KNOWN)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(KNOWN)}")
    previous = dict(_armed)
    _armed.update(faults)
    try:
        yield
    finally:
        _armed.clear()
        _armed.update(previous)


def armed(name: str) -> int | None:
    """The armed value of fault ``name``, or None."""
    return _armed.get(name)
