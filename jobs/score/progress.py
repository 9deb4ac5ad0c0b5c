"""fiqa's own progress lines while a run scores: images done of the total, rate, ETA and
failures so far, one line every ``progress_s`` seconds, instead of Ray Data's multi-line
progress every 10 s (2,358 lines for a million-image night; shown with ``verbose=true``).

The scoring actors count what they scored into one small actor (:class:`Counter`, no CPU),
at most once a second each; the driver reads it on its interval (:class:`Reporter`).

Python warnings raised in the stages' workers go to the same counter instead of each
worker's console (where Ray repeats them per process, "[repeated 61x across cluster]";
:mod:`jobs.score.worker_warnings`): the driver prints each kind once when it first
appears and, at the end, every kind once with its count; ``_SUCCESS`` keeps the counts
(``warnings``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

FLUSH_S = 1.0  # a scoring actor sends its counts at most this often
MAX_KINDS = 100  # kinds of warnings counted one by one; the rest as one
OTHER = "other warnings"


def _text(kind: str, example: str) -> str:
    category, where = kind.split(" ", 1)  # "UserWarning (file.py:12)"
    return f"{category}: {example} {where}"


class Counter:
    """Rows scored and failed so far, summed over the scoring actors (a Ray actor)."""

    def __init__(self):
        self.done = self.failed = 0
        self.warnings: dict[str, list] = {}  # a kind: [times raised, its first message]

    def add(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed

    def warned(self, counts: dict[str, tuple[int, str]]) -> None:
        """Counts of kinds of warnings (category and the line raising them: messages that
        differ only in numbers are one kind), each with an example message."""
        for kind, (n, example) in counts.items():
            if kind not in self.warnings and len(self.warnings) >= MAX_KINDS:
                kind, example = OTHER, "more kinds than fiqa keeps"
            entry = self.warnings.setdefault(kind, [0, example])
            entry[0] += n

    def read(self) -> tuple[int, int, dict[str, int]]:
        """Rows done and failed; each kind of warning as its text (category: first
        message (file:line)) with how often it was raised."""
        texts = {kind if kind == OTHER else _text(kind, example): n
                 for kind, (n, example) in self.warnings.items()}
        return self.done, self.failed, texts


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
        self._lock = threading.Lock()  # the final read may meet a report still running
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
        with self._lock:
            for text in warned:
                if text not in self.warnings:
                    self.out(f"fiqa: warning in the workers (counted at the end): {text}")
            for text, n in warned.items():  # counts only grow: a late, older read is no loss
                self.warnings[text] = max(n, self.warnings.get(text, 0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception as e:  # progress is never worth failing a run
                logging.getLogger("fiqa.score").debug("progress: %s", e)


SHOWN = 10  # kinds of warnings listed at the end


def by_count(warned: dict[str, int]) -> list[tuple[str, int]]:
    """Kinds of warnings with their counts, most frequent first (the console, the page)."""
    return sorted(warned.items(), key=lambda kv: (-kv[1], kv[0]))


def summary(warned: dict[str, int]) -> list[str]:
    """The end's lines: every kind of warning once, with its count, most frequent first."""
    if not warned:
        return []
    kinds = by_count(warned)
    out = [f"fiqa: {sum(warned.values()):,} warnings in the workers, {len(kinds)} "
           f"kind{'s' * (len(kinds) != 1)}:"]
    out += [f"fiqa:   {n:,} x {text}" for text, n in kinds[:SHOWN]]
    if len(kinds) > SHOWN:
        out.append(f"fiqa:   and {len(kinds) - SHOWN} more kinds (_SUCCESS lists them)")
    return out
