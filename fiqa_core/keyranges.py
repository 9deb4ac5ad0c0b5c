"""Object-store key ranges: one prefix's keys listed by many tasks, every key exactly once.

An object store lists a prefix 1,000 keys a request, each request waiting for the one before
(``ContinuationToken``): a prefix of 10 M keys is 10,000 requests in a row, however large the
cluster. A :class:`KeyRange` is a slice of a prefix that a task lists on its own, starting
with ListObjectsV2's ``StartAfter``. A task lists its range for a budget of pages
(:func:`list_range`); when the range is not exhausted, what is left is split into more ranges
(:func:`split`) at points spaced like the keys just listed — a few one task's listing apart,
then further and further — so that a prefix of any size is covered in a few rounds, each of
which multiplies the tasks.

Every key exactly once, whatever order the store lists in. AWS S3 lists in UTF-8 byte order;
SeaweedFS lists folder by folder (``a/b`` before ``a+b``: ``/`` sorts first). So a range
never ends at a string compared with keys: it ends at a *key*, ``stop``, the first key the
store lists after the next range's ``StartAfter`` (asked with one request, ``MaxKeys=1``).
Split points only have to be in the store's own order; made of characters above ``/`` after
the common prefix of keys the store listed in that order, and never a prefix of the range's
stop key, they are in every order above. A stop key deleted while listing: the range ends at
the first key past it in every order, or at the prefix's end, and leaves the next range's
keys to it (where that range begins now: one more request); a listing that ran out without
meeting them (a store that lists in no consistent order) is an error, never a key listed
twice.

Stores without ``StartAfter`` ordering (S3 Express directory buckets list unordered) need
``listing_tasks=1``: no split points, each prefix paged from start to end.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, replace

from .errors import FiqaError

PAGE_KEYS = 1000  # ListObjectsV2's maximum
# characters above it order the same in byte order and folder order (see the module doc)
_FLOOR = "/"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CARRY, _DIGITS = 3, 4  # characters before and after where keys differ that place a point


class ListingOrderError(FiqaError):
    """A key range listed past its end: the store lists keys in no consistent order."""


@dataclass(frozen=True)
class KeyRange:
    """The keys of ``bucket`` under ``prefix`` after ``after`` (None: from the first) up to,
    not including, the first key after ``until`` (None: to the end), ``stop`` once known."""

    bucket: str
    prefix: str
    after: str | None = None
    until: str | None = None
    stop: str | None = None


def first_after(fs, bucket: str, prefix: str, key: str | None) -> str | None:
    """The first key of ``prefix`` the store lists after ``key``, or None."""
    page = fs.call_s3("list_objects_v2", **_query(bucket, prefix, key, 1))
    contents = page.get("Contents") or ()
    return contents[0]["Key"] if contents else None


def list_range(fs, r: KeyRange, pages: int | None, page_keys: int = PAGE_KEYS
               ) -> tuple[list[dict], KeyRange | None]:
    """The keys of ``r`` (ListObjectsV2 ``Contents`` entries), in listing order, for at most
    ``pages`` pages (None: all), and what is left of ``r`` (None when nothing is)."""
    if r.until is not None and r.stop is None:  # its end: where the next range begins
        stop = first_after(fs, r.bucket, r.prefix, r.until)
        r = replace(r, stop=stop) if stop is not None else replace(r, until=None)
    got: list[dict] = []
    kwargs = _query(r.bucket, r.prefix, r.after, page_keys)
    n = 0
    while pages is None or n < pages or not got:
        page = fs.call_s3("list_objects_v2", **kwargs)
        n += 1
        for c in page.get("Contents") or ():
            if c["Key"] == r.stop:
                return got, None
            if r.stop is not None and _surely_past(c["Key"], r.stop):
                return _without_next(fs, r, got, ran_out=False), None
            got.append(c)
        if not page.get("IsTruncated"):
            return (got if r.stop is None else _without_next(fs, r, got, ran_out=True)), None
        kwargs = {**_query(r.bucket, r.prefix, None, page_keys),
                  "ContinuationToken": page["NextContinuationToken"]}
    return got, replace(r, after=got[-1]["Key"])


def split(rest: KeyRange, sample: list[str], pieces: int) -> list[KeyRange]:
    """``rest`` as up to ``pieces`` ranges, split after the keys ``sample`` (listed just before
    it, in listing order: its last is ``rest.after``); ``rest`` itself when ``pieces`` < 2."""
    points = split_points(sample, rest.stop, pieces - 1)
    starts = [rest.after, *points]
    ranges = [replace(rest, after=a, until=b, stop=None)
              for a, b in zip(starts[:-1], points, strict=True)]
    return [*ranges, replace(rest, after=starts[-1])]


def split_points(sample: list[str], stop: str | None, n: int) -> list[str]:
    """Up to ``n`` increasing strings after ``sample[-1]`` (and before ``stop``, a key), in
    every listing order: the first ones a sample's span apart, then twice as far each."""
    if n < 1 or not sample:
        return []
    first, last = sample[0], sample[-1]
    common = len(os.path.commonprefix([first, last]))
    # room for carries (as from 0999 to 1000), within the folder of the keys
    stem = last[: max(common - _CARRY, last.rfind("/", 0, common) + 1)]
    width = common - len(stem) + _DIGITS
    tails = [k[len(stem):] for k in sample]
    alphabet = sorted({ch for t in tails for ch in t[:width] if ch > _FLOOR})
    if len(alphabet) < 2:
        alphabet = sorted(set(alphabet) | set(_ALPHABET))
    start = _number(tails[-1], alphabet, width)
    step = max(start - _number(tails[0], alphabet, width), 1)
    near = max(1, n // 2)
    offsets = [*range(1, near + 1), *(near << k for k in range(1, n - near + 1))]
    points: list[str] = []
    for off in offsets:
        v = start + step * off
        if v >= len(alphabet) ** width:
            break
        p = stem + _string(v, alphabet, width)
        if p > (points[-1] if points else last) and (
            stop is None or (p < stop and not stop.startswith(p))
        ):
            points.append(p)
    return points


def _number(tail: str, alphabet: list[str], width: int) -> int:
    """``tail``'s first ``width`` characters as a number in base ``len(alphabet)``, in order
    (a character not in it counts as the next one that is; a short tail is padded)."""
    v = 0
    for i in range(width):
        d = bisect.bisect_left(alphabet, tail[i]) if i < len(tail) else 0
        v = v * len(alphabet) + min(d, len(alphabet) - 1)
    return v


def _string(v: int, alphabet: list[str], width: int) -> str:
    """The ``width`` characters whose number is ``v`` (``v`` < ``len(alphabet) ** width``)."""
    out = []
    for _ in range(width):
        v, d = divmod(v, len(alphabet))
        out.append(alphabet[d])
    return "".join(reversed(out))


def _query(bucket: str, prefix: str, after: str | None, keys: int) -> dict:
    kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": keys}
    if after is not None:
        kwargs["StartAfter"] = after
    return kwargs


def _surely_past(key: str, stop: str) -> bool:
    """Whether ``key`` comes after ``stop`` in every listing order."""
    if key <= stop:
        return False
    i = len(os.path.commonprefix([key, stop]))
    return i == len(stop) or key[i] != "/"  # "/" ranks last in byte order, first in folder order


def _without_next(fs, r: KeyRange, got: list[dict], ran_out: bool) -> list[dict]:
    """``got`` without the next range's keys: ``r.stop`` was deleted while listing, so the
    listing may have gone past it (it stopped at a key surely past it, or ran out)."""
    first = first_after(fs, r.bucket, r.prefix, r.until)  # where the next range begins now
    keys = [c["Key"] for c in got]
    if first in keys:
        return got[: keys.index(first)]
    if ran_out and first is not None:
        raise ListingOrderError(
            f"s3://{r.bucket}/{r.prefix}: the listing after {r.after!r} ran past its end "
            f"{r.stop!r} without meeting the next range's first key {first!r}: the store "
            "lists keys in no consistent order; list with listing_tasks=1"
        )
    return got
