"""A stage worker's Python warnings, counted for the run instead of printed: each kind
(category and the line raising it; messages that differ only in their numbers are one
kind, with its first message as the example) goes to the run's progress counter
(:class:`jobs.score.progress.Counter`), the first of a kind at once, the counts before
each batch's rows are returned.

Counted while a batch runs (:func:`forwarding_warnings` wraps a task stage's function; a
scoring actor forwards from its constructor on, being its own process): every occurrence
counts (a catch-all ``always`` filter after the process's own, so what it ignores stays
ignored), and afterwards the process's warning filters are as they were, with those its
libraries added meanwhile (an import inside the batch) kept.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable

log = logging.getLogger("fiqa.score")


class _Forwarded:
    """This worker process's warnings not yet sent, and sends not yet confirmed."""

    lock = threading.Lock()  # an object store's reader threads may warn too
    pending: dict[str, list] = {}  # kind: [times, example]
    seen: set[str] = set()
    unconfirmed: list = []  # refs of sends made without waiting
    counter = None


def forward_warnings(counter) -> None:
    """From now on every Python warning in this process is counted for the run's
    ``counter`` (sent by :func:`send_warnings`) instead of printed; None: left as it is."""
    if counter is None:
        return
    _Forwarded.counter = counter
    if warnings.showwarning is not _forward:
        warnings.simplefilter("always", append=True)
        warnings.showwarning = _forward


def _forward(message, category, filename, lineno, file=None, line=None) -> None:
    kind = f"{category.__name__} ({os.path.basename(filename)}:{lineno})"
    with _Forwarded.lock:
        entry = _Forwarded.pending.setdefault(kind, [0, str(message)])
        entry[0] += 1
        first = kind not in _Forwarded.seen
        _Forwarded.seen.add(kind)
    if first:  # the driver shows a new kind while the run goes on
        send_warnings(wait=False)


def send_warnings(wait: bool = True) -> None:
    """Send this worker's pending counts to the counter; ``wait``: until it has them and
    every send before (before a batch's rows are returned: the run's end counts them all)."""
    with _Forwarded.lock:
        counts, _Forwarded.pending = _Forwarded.pending, {}
        earlier = _Forwarded.unconfirmed
        if wait:
            _Forwarded.unconfirmed = []
    if _Forwarded.counter is None:
        return
    try:
        ref = _Forwarded.counter.warned.remote(
            {k: (n, example) for k, (n, example) in counts.items()}) if counts else None
        if wait:
            refs = earlier + ([ref] if ref is not None else [])
            if refs:
                import ray

                ray.get(refs, timeout=30)
        elif ref is not None:
            with _Forwarded.lock:
                _Forwarded.unconfirmed.append(ref)
    except Exception as e:  # counting warnings is never worth failing a batch
        log.debug("warnings not counted: %s", e)


def forwarding_warnings(fn: Callable, counter) -> Callable:
    """A task stage's batch function ``fn``, run with its warnings forwarded to ``counter``
    (the worker process runs other tasks too: its filters are restored after the batch,
    keeping those its libraries added meanwhile). It keeps ``fn``'s name, which Ray's
    operators and stats show."""

    def batch_fn(batch, **kwargs):
        added = []
        try:
            with warnings.catch_warnings():
                before = list(warnings.filters)
                forward_warnings(counter)
                try:
                    return fn(batch, **kwargs)
                finally:
                    send_warnings()
                    added = [f for f in warnings.filters if f not in before and f != _ALWAYS]
        finally:  # after the filters were restored: those added meanwhile, in their order
            for action, message, category, module, lineno in reversed(added):
                warnings.filterwarnings(action, getattr(message, "pattern", message or ""),
                                        category, getattr(module, "pattern", module or ""),
                                        lineno)

    batch_fn.__name__ = batch_fn.__qualname__ = fn.__name__
    return batch_fn


_ALWAYS = ("always", None, Warning, None, 0)  # the catch-all forward_warnings appends
