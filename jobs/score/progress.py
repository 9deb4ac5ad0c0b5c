"""fiqa's own progress lines while a run scores: images done of the total, rate, ETA and
failures so far, one line every ``progress_s`` seconds, instead of Ray Data's multi-line
progress every 10 s (2,358 lines for a million-image night; shown with ``verbose=true``).

The scoring actors count what they scored into one small actor (:class:`Counter`, no CPU),
at most once a second each; the driver reads it on its interval (:class:`Reporter`).

Python warnings raised in the stages' workers go to the same counter instead of each
worker's console (where Ray repeats them per process, "[repeated 61x across cluster]"):
the driver prints each kind once when it first appears and, at the end, every kind once
with its count; ``_SUCCESS`` keeps the counts (``warnings``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable

FLUSH_S = 1.0  # a scoring actor sends its counts at most this often


class Counter:
    """Rows scored and failed so far, summed over the scoring actors (a Ray actor)."""

    def __init__(self):
        self.done = self.failed = 0
        self.warnings: dict[str, int] = {}  # a warning's text: how often it was raised

    def add(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed

    def warned(self, counts: dict[str, int]) -> None:
        for text, n in counts.items():
            self.warnings[text] = self.warnings.get(text, 0) + n

    def read(self) -> tuple[int, int, dict[str, int]]:
        return self.done, self.failed, dict(self.warnings)


class Tally:
    """A scoring actor's side: counts gathered, sent to the counter at most every
    :data:`FLUSH_S` seconds (fire and forget: progress never slows scoring)."""

    def __init__(self, counter, clock: Callable[[], float] = time.monotonic):
        self.counter, self.clock = counter, clock
        self.done = self.failed = 0
        self.sent_at = clock()

    def add(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed
        if self.counter is not None and self.clock() - self.sent_at >= FLUSH_S:
            self.counter.add.remote(self.done, self.failed)
            self.done = self.failed = 0
            self.sent_at = self.clock()


class _Forwarded:
    """A worker process's warnings not yet sent to the run's counter."""

    lock = threading.Lock()  # an object store's reader threads may warn too
    pending: dict[str, int] = {}
    seen: set[str] = set()
    counter = None


def forward_warnings(counter) -> None:
    """In a stage's worker: every Python warning from now on is counted for the run's
    ``counter`` (sent by :func:`send_warnings`) instead of printed; None: left as it is."""
    if counter is None:
        return
    _Forwarded.counter = counter
    if warnings.showwarning is not _forward:
        # each one counted, not only a location's first; what is ignored stays ignored
        # (ResourceWarning, DeprecationWarning: filters ahead of this catch-all)
        warnings.simplefilter("always", append=True)
        warnings.showwarning = _forward


def _forward(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})"
    with _Forwarded.lock:
        _Forwarded.pending[text] = _Forwarded.pending.get(text, 0) + 1
        first = text not in _Forwarded.seen
        _Forwarded.seen.add(text)
    if first:  # the driver shows a new kind while the run goes on
        send_warnings(wait=False)


def send_warnings(wait: bool = True) -> None:
    """Send this worker's pending warning counts to the counter; ``wait``: until it has
    them (before a batch's rows are returned, so the run's end counts every one)."""
    with _Forwarded.lock:
        counts, _Forwarded.pending = _Forwarded.pending, {}
    if counts and _Forwarded.counter is not None:
        try:
            ref = _Forwarded.counter.warned.remote(counts)
            if wait:
                import ray

                ray.get(ref, timeout=30)
        except Exception as e:  # counting warnings is never worth failing a batch
            logging.getLogger("fiqa.score").debug("warnings not counted: %s", e)


def with_warnings_forwarded(batch, fn: Callable, counter, **kwargs):
    """A task stage's batch function ``fn`` run with its warnings forwarded to ``counter``
    (a task's worker process runs other tasks too: as it was again after the batch)."""
    with warnings.catch_warnings():
        forward_warnings(counter)
        try:
            return fn(batch, **kwargs)
        finally:
            send_warnings()


def line(done: int, failed: int, total: int | None, seconds: float) -> str:
    """``fiqa: scored 1,234 of 5,000 images (25%), 410 images/s, ETA 9 s, 2 failed``."""
    rate = done / seconds if seconds > 0 else 0.0
    if total:
        left = max(total - done, 0)
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left else ""
        of = f" of {total:,} images ({min(done / total, 1):.0%})"
    else:
        of, eta = " images", ""
    return f"fiqa: scored {done:,}{of}, {rate:,.0f} images/s{eta}, {failed:,} failed so far"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Reporter:
    """The driver's side: a thread printing :func:`line` every ``interval`` seconds, and
    each new kind of warning once (``read()`` gives the counts and warnings; ``total()``
    the images to score, None while unknown); at the end every kind once with its count
    (``warnings``)."""

    def __init__(self, read: Callable[[], tuple[int, int, dict]],
                 total: Callable[[], int | None],
                 interval: float, out: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.total, self.interval, self.out, self.clock = (
            read, total, interval, out, clock)
        self.started = clock()
        self.warnings: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fiqa-progress", daemon=True)

    def __enter__(self) -> Reporter:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._new_warnings(self.read()[2])
        except Exception as e:
            logging.getLogger("fiqa.score").debug("progress: %s", e)
        for text in summary(self.warnings):
            self.out(text)

    def report(self) -> str:
        done, failed, warned = self.read()
        text = line(done, failed, self.total(), self.clock() - self.started)
        self.out(text)
        self._new_warnings(warned)
        return text

    def _new_warnings(self, warned: dict[str, int]) -> None:
        for text in warned:
            if text not in self.warnings:
                self.out(f"fiqa: warning in the workers (counted at the end): {text}")
        self.warnings = dict(warned)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception as e:  # progress is never worth failing a run
                logging.getLogger("fiqa.score").debug("progress: %s", e)


SHOWN = 10  # kinds of warnings listed at the end


def summary(warned: dict[str, int]) -> list[str]:
    """The end's lines: every kind of warning once, with its count, most frequent first."""
    if not warned:
        return []
    kinds = sorted(warned.items(), key=lambda kv: (-kv[1], kv[0]))
    out = [f"fiqa: {sum(warned.values()):,} warnings in the workers, {len(kinds)} "
           f"kind{'s' * (len(kinds) != 1)}:"]
    out += [f"fiqa:   {n:,} x {text}" for text, n in kinds[:SHOWN]]
    if len(kinds) > SHOWN:
        out.append(f"fiqa:   and {len(kinds) - SHOWN} more kinds (_SUCCESS lists them)")
    return out
