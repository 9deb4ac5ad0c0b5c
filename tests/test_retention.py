"""Retention (keep_nights): which nights go, and what is left after a fault or beside a
busy run. On local folders, without Ray: retention is storage operations only."""

import json
import logging

import pytest

from fiqa_core.errors import ConfigError
from fiqa_core.lease import Lease
from jobs.score.commit import previous_partition
from jobs.score.config import ScoreConfig, check
from jobs.score.retention import check_not_retired, retire, to_retire


def _night(out, date, committed=True):
    part = out / f"date={date}"
    (part / "bucket=0").mkdir(parents=True)
    (part / "bucket=0" / "a.parquet").write_bytes(b"PAR1")
    if committed:
        manifest = [{"name": "bucket=0/a.parquet", "size": 4, "rows": 1}]
        (part / "_SUCCESS").write_text(json.dumps({"rows": 1, "manifest": manifest}))
    return part


def _names(out):
    return sorted(p.name for p in out.iterdir())


def test_the_newest_nights_are_kept_and_unfinished_ones_never_touched(tmp_path):
    for d in ("01", "02", "03", "04", "05"):
        _night(tmp_path, f"2026-12-{d}")
    _night(tmp_path, "2026-11-30", committed=False)  # an unfinished run's
    removed = retire(str(tmp_path), str(tmp_path / "date=2026-12-05"), keep=2)
    assert [p.rsplit("/", 1)[-1] for p in removed] == [
        "date=2026-12-01", "date=2026-12-02", "date=2026-12-03"]
    assert _names(tmp_path) == ["date=2026-11-30", "date=2026-12-04", "date=2026-12-05"]
    assert (tmp_path / "date=2026-12-04" / "bucket=0" / "a.parquet").exists()
    # unset, or as many nights as there are: nothing goes
    assert retire(str(tmp_path), str(tmp_path / "date=2026-12-05"), keep=None) == []
    assert to_retire(str(tmp_path), str(tmp_path / "date=2026-12-05"), 2) == []


def test_the_night_just_written_is_kept_even_when_it_is_a_backfill(tmp_path):
    for d in ("10", "11", "12"):
        _night(tmp_path, f"2026-12-{d}")
    _night(tmp_path, "2026-12-05")  # a backfill, just committed
    retire(str(tmp_path), str(tmp_path / "date=2026-12-05"), keep=2)
    assert _names(tmp_path) == ["date=2026-12-05", "date=2026-12-11", "date=2026-12-12"]
    # keep_nights=1 never removes the last complete night: the one just written
    retire(str(tmp_path), str(tmp_path / "date=2026-12-12"), keep=1)
    assert _names(tmp_path) == ["date=2026-12-12"]


def test_a_night_busy_with_another_run_is_left_for_the_next(tmp_path, caplog):
    for d in ("01", "02", "03"):
        _night(tmp_path, f"2026-12-{d}")
    with Lease(str(tmp_path / "date=2026-12-01"), "another run"):
        with caplog.at_level(logging.WARNING, logger="fiqa.score"):
            removed = retire(str(tmp_path), str(tmp_path / "date=2026-12-03"), keep=1)
    assert [p.rsplit("/", 1)[-1] for p in removed] == ["date=2026-12-02"]
    assert (tmp_path / "date=2026-12-01" / "_SUCCESS").exists()  # untouched
    assert "date=2026-12-01 left for the next night" in caplog.text
    assert "another run" in caplog.text


def test_a_removal_cut_short_is_finished_next_time_and_never_reused(tmp_path, monkeypatch):
    for d in ("01", "02", "03"):
        _night(tmp_path, f"2026-12-{d}")
    first = tmp_path / "date=2026-12-01"
    (first / "bucket=0" / "b.parquet").write_bytes(b"PAR1")
    manifest = [{"name": f"bucket=0/{n}.parquet", "size": 4, "rows": 1} for n in "ab"]
    (first / "_SUCCESS").write_text(json.dumps({"rows": 2, "manifest": manifest}))
    import fsspec.implementations.local as local

    real = local.LocalFileSystem.rm_file
    calls = []

    def dies_on_the_second(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("the store failed")
        return real(self, path)

    monkeypatch.setattr(local.LocalFileSystem, "rm_file", dies_on_the_second)
    assert retire(str(tmp_path), str(tmp_path / "date=2026-12-03"), keep=2) == []
    monkeypatch.undo()
    cut = tmp_path / "date=2026-12-01"
    assert (cut / "_RETIRED").exists() and not (cut / "_SUCCESS").exists()
    assert (cut / "bucket=0" / "b.parquet").exists()  # the file it failed on
    # meanwhile: no night reuses it, no run writes it
    assert previous_partition(str(tmp_path), str(tmp_path / "date=2026-12-02"))[0] is None
    with pytest.raises(ConfigError, match="being removed by retention"):
        check_not_retired(str(cut))
    # the next night's retention finishes it
    retire(str(tmp_path), str(tmp_path / "date=2026-12-03"), keep=2)
    assert _names(tmp_path) == ["date=2026-12-02", "date=2026-12-03"]


def test_a_damaged_night_is_left_and_not_counted_among_those_kept(tmp_path, caplog):
    for d in ("01", "02", "03", "04"):
        _night(tmp_path, f"2026-12-{d}")
    (tmp_path / "date=2026-12-03" / "bucket=0" / "a.parquet").unlink()  # damaged
    with caplog.at_level(logging.WARNING, logger="fiqa.score"):
        removed = retire(str(tmp_path), str(tmp_path / "date=2026-12-04"), keep=2)
    # kept: the two newest that match their _SUCCESS (02 and 04); 03 left for a person
    assert [p.rsplit("/", 1)[-1] for p in removed] == ["date=2026-12-01"]
    assert _names(tmp_path) == ["date=2026-12-02", "date=2026-12-03", "date=2026-12-04"]
    assert (tmp_path / "date=2026-12-03" / "_SUCCESS").exists()
    assert "date=2026-12-03 does not match its _SUCCESS (1 missing (bucket=0/a.parquet))" in (
        caplog.text)


def test_a_store_error_listing_the_nights_is_a_warning(tmp_path, monkeypatch, caplog):
    for d in ("01", "02"):
        _night(tmp_path, f"2026-12-{d}")
    import jobs.score.retention as retention

    def unreachable(output):
        raise OSError("the store failed")

    monkeypatch.setattr(retention, "dates", unreachable)
    with caplog.at_level(logging.WARNING, logger="fiqa.score"):
        assert retire(str(tmp_path), str(tmp_path / "date=2026-12-02"), keep=1) == []
    assert "retention: nothing removed this time (OSError: the store failed)" in caplog.text
    assert _names(tmp_path) == ["date=2026-12-01", "date=2026-12-02"]


def test_keep_nights_must_be_at_least_one():
    cfg = ScoreConfig(input="in/", model="m", output="o", keep_nights=0)
    with pytest.raises(ConfigError, match="keep_nights must be >= 1"):
        check(cfg)


def test_a_store_error_of_any_kind_is_a_warning_never_a_failed_night(tmp_path, monkeypatch,
                                                                      caplog):
    """The night that retires is committed already: s3fs passes some botocore errors on
    untranslated (not OSError), and those must not turn a committed night into a failure."""
    for d in ("01", "02"):
        _night(tmp_path, f"2026-12-{d}")
    import fsspec.implementations.local as local

    class EndpointConnectionError(Exception):
        pass

    def unreachable(self, path):
        raise EndpointConnectionError("Could not connect to the endpoint URL")

    monkeypatch.setattr(local.LocalFileSystem, "rm_file", unreachable)
    with caplog.at_level(logging.WARNING, logger="fiqa.score"):
        assert retire(str(tmp_path), str(tmp_path / "date=2026-12-02"), keep=1) == []
    assert "EndpointConnectionError: Could not connect" in caplog.text
    assert (tmp_path / "date=2026-12-02" / "_SUCCESS").exists()
