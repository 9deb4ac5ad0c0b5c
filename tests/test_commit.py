"""A commit that can be checked: ``_SUCCESS`` lists the partition's files; a night reuses
only a partition that matches it, and ``fiqa verify`` checks every committed partition."""

import json
import logging
import shutil

import pyarrow.parquet as pq

from jobs import score as score_job
from jobs.cli import main as cli_main
from tests.test_score import cfg, checkpoint, make_lake  # noqa: F401 (checkpoint: a fixture)


def test_a_damaged_night_is_reported_not_reused_and_left_as_it_is(tmp_path, checkpoint,  # noqa: F811
                                                                   ray_local, caplog, capsys):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=30, n_png=10, zoo=False)
    out = tmp_path / "scores"
    nights = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]

    def night(i):
        return score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date=nights[i]))

    first = night(0)
    part = out / f"date={nights[0]}"
    listed = {f["name"]: f for f in first["manifest"]}
    on_disk = {p.relative_to(part).as_posix(): p for p in part.rglob("*.parquet")}
    assert set(listed) == set(on_disk) and len(listed) == first["files"]
    for name, p in on_disk.items():
        assert listed[name]["size"] == p.stat().st_size
        assert listed[name]["rows"] == pq.read_metadata(p).num_rows
    assert sum(f["rows"] for f in first["manifest"]) == first["rows"] == 40
    assert json.loads((part / "_SUCCESS").read_text())["manifest"] == first["manifest"]
    assert cli_main(["verify", f"output={out}", "rows=true"]) == 0
    assert f"ok      {part}: {first['files']} files, 40 rows" in capsys.readouterr().out

    second = night(1)  # reuses night 1, which matches
    assert (second["reused"], second["previous"], second["previous_damaged"]) == (
        40, str(part), [])

    # night 2 loses a file and gains a stray one; night 3 reuses night 1 instead
    part2 = out / f"date={nights[1]}"
    lost = sorted(part2.rglob("*.parquet"))[0]
    kept = {p: p.read_bytes() for p in part2.rglob("*") if p.is_file() and p != lost}
    lost.unlink()
    (part2 / "stray.parquet").write_bytes(b"junk")
    caplog.set_level(logging.WARNING, "fiqa.score")
    third = night(2)
    name = lost.relative_to(part2).as_posix()
    assert third["previous"] == str(part) and third["reused"] == 40
    assert third["previous_damaged"] == [{"partition": str(part2), "missing": [name],
                                          "extra": ["stray.parquet"]}]
    warning = next(r.getMessage() for r in caplog.records if "does not match" in r.getMessage())
    assert str(part2) in warning and name in warning and "Not reused" in warning
    assert "1 earlier partition(s) did not match" in capsys.readouterr().out
    # nothing of the damaged partition was touched
    assert {p: p.read_bytes() for p in kept} == kept and not lost.exists()

    assert cli_main(["verify", f"output={out}"]) == 1
    printed = capsys.readouterr().out
    assert f"DAMAGED {part2}: 1 missing ({name}); 1 extra (stray.parquet)" in printed
    assert printed.count("ok      ") == 2  # nights 1 and 3

    # a file of the same name but another size is damage too (a night rewritten in place)
    one = sorted((out / f"date={nights[2]}").rglob("*.parquet"))[0]
    one.write_bytes(one.read_bytes() + b"\0")
    fourth = night(3)
    assert fourth["previous"] == str(part)
    assert [d["partition"] for d in fourth["previous_damaged"]] == [
        str(out / f"date={nights[2]}"), str(part2)]
    assert fourth["previous_damaged"][0]["size_differs"][0]["name"] == (
        one.relative_to(out / f"date={nights[2]}").as_posix())

    # a file this run did not write in its own partition: no commit that fails its check
    (out / "date=2026-11-24").mkdir()
    (out / "date=2026-11-24" / "notes.txt").write_text("mine")
    code = cli_main(["score", f"input={lake}", f"model={checkpoint}", f"output={out}",
                     "run_date=2026-11-24", "buckets=8", "precision=fp32", "scorers=1"])
    assert code == 2 and "holds files this run did not write (notes.txt)" in (
        capsys.readouterr().out)
    assert not (out / "date=2026-11-24" / "_SUCCESS").exists()

    # one kind of run per output: a pseudo-label run into a nightly output is refused
    assert cli_main(["pseudo-label", f"input={lake}", f"model={checkpoint}",
                     f"output={out}"]) == 2
    assert "holds fiqa score's date= partitions" in capsys.readouterr().out


def test_a_success_from_an_earlier_fiqa_is_checked_by_its_counts(tmp_path, checkpoint,  # noqa: F811
                                                                 ray_local):
    from jobs.score.commit import verify

    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=12, n_png=0, zoo=False)
    out = tmp_path / "scores"
    score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date="2026-11-20"))
    part = out / "date=2026-11-20"
    marker = json.loads((part / "_SUCCESS").read_text())
    del marker["manifest"]  # as fiqa wrote it before it listed files
    (part / "_SUCCESS").write_text(json.dumps(marker))
    assert verify(str(part)) == {}
    second = score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date="2026-11-21"))
    assert second["reused"] == 12
    shutil.copy(next(part.rglob("*.parquet")), part / "copy.parquet")
    assert "counts" in verify(str(part))

    # a _SUCCESS that is not JSON is damage, reported, never a crash
    (part / "_SUCCESS").write_text("{trunc")
    assert verify(str(part)) == {"marker": "_SUCCESS cannot be read (Expecting property name "
                                           "enclosed in double quotes: line 1 column 2 (char 1))"}
    # and a nightly run into a pseudo-label output (a _SUCCESS at its root) is refused
    assert cli_main(["score", f"input={lake}", f"model={checkpoint}",
                     f"output={part}"]) == 2
