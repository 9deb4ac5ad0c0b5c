"""fiqa's own progress lines while a run scores: images done of the total, rate, ETA and
failures so far, one line every ``progress_s`` seconds, instead of Ray Data's multi-line
progress every 10 s (2,358 lines for a million-image night; shown with ``verbose=true``).

The scoring actors count what they scored into one small actor (:class:`Counter`, no CPU),
at most once a second each; the driver reads it on its interval (:class:`Reporter`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

FLUSH_S = 1.0  # a scoring actor sends its counts at most this often


class Counter:
    """Rows scored and failed so far, summed over the scoring actors (a Ray actor)."""

    def __init__(self):
        self.done = self.failed = 0

    def add(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed

    def read(self) -> tuple[int, int]:
        return self.done, self.failed


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
    """The driver's side: a thread printing :func:`line` every ``interval`` seconds
    (``read()`` gives the counts; ``total()`` the images to score, None while unknown)."""

    def __init__(self, read: Callable[[], tuple[int, int]], total: Callable[[], int | None],
                 interval: float, out: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.total, self.interval, self.out, self.clock = (
            read, total, interval, out, clock)
        self.started = clock()
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

    def report(self) -> str:
        done, failed = self.read()
        text = line(done, failed, self.total(), self.clock() - self.started)
        self.out(text)
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception as e:  # progress is never worth failing a run
                logging.getLogger("fiqa.score").debug("progress: %s", e)
