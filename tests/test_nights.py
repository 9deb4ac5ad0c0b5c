"""The nightly cases around reuse: a new model, other settings, a changed bucket count,
rows that could not be read, and partitions written before rows carried a pipeline id."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from fiqa_core import create_model, read_checkpoint_config, save_checkpoint
from fiqa_core.errors import InputError
from fiqa_core.lake import bucket_of
from jobs import score as score_job
from jobs.report import write_report
from jobs.report.figures import figures
from jobs.score.planning import plan_bucket, same_facts
from jobs.score.reading import committed_files, drop_all_carried
from jobs.score.schema import FACE_COLUMNS
from jobs.score.stages import legacy_pipeline_id, pipeline_id
from tests.test_score import cfg, image_files, make_lake, read_partition

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(str(root / f"m{seed}"))
        save_checkpoint(create_model("student-edgenext-xxs", image_size=SIZE), paths[-1])
    return paths


def test_a_night_with_a_new_model_or_settings_reuses_nothing(tmp_path, models, ray_local):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=16, n_png=4, zoo=False)
    out = tmp_path / "scores"
    a, b = models
    first = score_job.run(cfg(input=lake, model=a, output=out, run_date="2026-11-20"))
    assert first["scored"] == 20
    second = score_job.run(cfg(input=lake, model=b, output=out, run_date="2026-11-21"))
    assert (second["scored"], second["reused"]) == (20, 0)
    rows = read_partition(str(out / "date=2026-11-21"))
    assert set(rows["model"]) == {read_checkpoint_config(b).id}  # nothing of model a mixed in
    assert set(rows["pipeline"]) == {second["pipeline"]} != {first["pipeline"]}
    # the same model with other decoding settings is another pipeline: nothing reused
    third = score_job.run(cfg(input=lake, model=b, output=out, run_date="2026-11-22",
                              draft="true", keep_nights="2"))
    assert (third["scored"], third["reused"]) == (20, 0)
    # retention: the newest two nights are kept, the first is gone, folder and all
    assert sorted(p.name for p in out.iterdir()) == ["date=2026-11-21", "date=2026-11-22"]
    assert third["pipeline"] != second["pipeline"] and third["model"] == second["model"]
    assert set(read_partition(str(out / "date=2026-11-22"))["pipeline"]) == {third["pipeline"]}


def test_a_changed_bucket_count_rescores_everything_with_a_warning(tmp_path, models,
                                                                   ray_local, caplog):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=12, n_png=0, zoo=False)
    out = tmp_path / "scores"
    score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-20"))
    four = replace(cfg(input=lake, model=models[0], output=out, run_date="2026-11-21"),
                   buckets=4)
    with caplog.at_level("WARNING", logger="fiqa.score"):
        night = score_job.run(four)
    assert (night["scored"], night["reused"], night["buckets"]) == (12, 0, 4)
    assert "used 8 buckets, not 4: rescoring everything" in caplog.text
    assert {p.name for p in (out / "date=2026-11-21").glob("bucket=*")} <= {
        f"bucket={i}" for i in range(4)}  # a subset: a bucket may hold none of 12 paths


def _previous(tmp_path, rows: list[dict]) -> str:
    part = tmp_path / "date=2026-11-20"
    (part / "bucket=0").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(part / "bucket=0" / "a.parquet")
    return str(part)


def _listing(paths) -> pd.DataFrame:
    return pd.DataFrame({"path": paths, "size": 10, "mtime": 1.0, "etag": None, "bucket": 0,
                         "is_image": True})


def test_rows_that_could_not_be_read_are_scored_again(tmp_path, models):
    c = cfg(input="unused/", model=models[0], output=str(tmp_path))
    model = read_checkpoint_config(models[0])
    pid = pipeline_id(c, model)
    common = {"size": 10, "mtime": 1.0, "etag": None, "model": model.id, "pipeline": pid,
              "reused": False, "scored_at": "2026-11-20T00:00:00+00:00"}
    prev = _previous(tmp_path, [
        {"path": "/l/a.jpg", "score": 3.0, "raw_score": 0.1, "status": "ok", "error": None,
         "width": 40, "height": 48, **common},
        {"path": "/l/b.jpg", "score": None, "raw_score": None, "status": "read_error",
         "error": "ConnectionError: reset", "width": None, "height": None, **common},
        {"path": "/l/c.jpg", "score": None, "raw_score": None, "status": "corrupt",
         "error": "broken", "width": None, "height": None, **common},
    ])
    new = tmp_path / "new"
    plan = plan_bucket(_listing(["/l/a.jpg", "/l/b.jpg", "/l/c.jpg"]), str(new),
                       prev, pid, lambda m: legacy_pipeline_id(c, model, m)).to_pandas()
    # a read error was the store's, not the image's: asked again; a corrupt file stays so
    assert list(plan["path"]) == ["/l/b.jpg"]
    carried = list((new / "bucket=0").glob("reused-*.parquet"))
    assert len(carried) == 1
    rows = pq.read_table(carried[0]).to_pandas().set_index("path")
    assert sorted(rows.index) == ["/l/a.jpg", "/l/c.jpg"] and rows["reused"].all()
    assert rows.at["/l/a.jpg", "score"] == 3.0 and rows.at["/l/c.jpg", "status"] == "corrupt"
    assert set(rows["pipeline"]) == {pid} and rows.at["/l/a.jpg", "width"] == 40
    # planned again (a rerun, or Ray retrying the task): the carried rows count as done
    again = plan_bucket(_listing(["/l/a.jpg", "/l/b.jpg", "/l/c.jpg"]), str(new),
                        prev, pid, lambda m: legacy_pipeline_id(c, model, m)).to_pandas()
    assert list(again["path"]) == ["/l/b.jpg"]
    assert len(list((new / "bucket=0").glob("*.parquet"))) == 1
    # ... and when since then /l/c.jpg was deleted and /l/a.jpg changed, a rerun's driver
    # drops the carried rows of the attempt before and they are carried again against this
    # listing: no stale row left
    assert drop_all_carried(str(new), [f"bucket=0/{carried[0].name}"]) == 1
    changed = _listing(["/l/a.jpg", "/l/b.jpg"]).assign(mtime=[2.0, 1.0])
    third = plan_bucket(changed, str(new), prev, pid,
                        lambda m: legacy_pipeline_id(c, model, m)).to_pandas()
    assert list(third["path"]) == ["/l/a.jpg", "/l/b.jpg"]
    assert list((new / "bucket=0").glob("*.parquet")) == []


def test_a_file_of_the_night_before_gone_while_planning_fails_the_run(tmp_path, models):
    """Another run's retention removing the night this one plans from: the files its
    _SUCCESS lists are read, so a file gone is an error, never a bucket read as empty."""
    c = cfg(input="unused/", model=models[0], output=str(tmp_path))
    model = read_checkpoint_config(models[0])
    pid = pipeline_id(c, model)
    prev = _previous(tmp_path, [{"path": "/l/a.jpg", "size": 10, "mtime": 1.0, "etag": None,
                                 "score": 3.0, "status": "ok", "pipeline": pid}])
    files = {0: ["bucket=0/a.parquet", "bucket=0/b.parquet"]}  # b.parquet: removed since
    with pytest.raises(InputError, match=r"b\.parquet, of the night this one plans from, "
                                         r"has gone since it was checked against its _SUCCESS"):
        plan_bucket(_listing(["/l/a.jpg"]), str(tmp_path / "new"), prev, pid,
                    lambda m: legacy_pipeline_id(c, model, m), previous_files=files)
    assert committed_files(None) is None


def test_an_interrupted_night_resumes_after_images_were_deleted_or_changed(tmp_path, models,
                                                                           ray_local):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=12, n_png=0, zoo=False)
    out = tmp_path / "scores"
    score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-20"))
    night = cfg(input=lake, model=models[0], output=out, run_date="2026-11-21")
    assert score_job.run(night)["reused"] == 12
    # what a night killed after planning leaves: its carried rows, no _SUCCESS
    (out / "date=2026-11-21" / "_SUCCESS").unlink()
    files = image_files(lake)
    # deleted before the rerun: the image alone in its bucket if there is one (then no
    # image of the rerun's listing falls in the bucket that holds its carried row)
    per_bucket = Counter(bucket_of(f, night.buckets) for f in files)
    gone = next((f for f in files if per_bucket[bucket_of(f, night.buckets)] == 1), files[0])
    Path(gone).unlink()
    left = [f for f in files if f != gone]
    Path(left[0]).write_bytes(Path(left[1]).read_bytes())  # changed before the rerun
    again = score_job.run(night)
    assert (again["images"], again["rows"], again["scored"], again["reused"]) == (11, 11, 1, 10)
    rows = read_partition(str(out / "date=2026-11-21")).set_index("path")
    assert sorted(rows.index) == left
    assert not rows.at[left[0], "reused"] and rows.loc[left[1:], "reused"].all()
    assert rows.at[left[0], "size"] == Path(left[1]).stat().st_size


def test_a_partition_from_before_pipeline_ids_is_read_as_its_model_alone(tmp_path, models,
                                                                         ray_local):
    """Rows without a pipeline column count as the default pipeline of their model: the
    next night reuses them (same model, default settings) and no other pipeline does."""
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=10, n_png=2, zoo=False)
    out = tmp_path / "scores"
    first = score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-20"))
    part = out / "date=2026-11-20"
    marker = json.loads((part / "_SUCCESS").read_text())
    for f in marker["manifest"]:  # rewrite it as an older fiqa wrote it
        path = part / f["name"]
        pq.write_table(pq.read_table(path).drop_columns(["pipeline", *FACE_COLUMNS]), path)
        f["size"] = path.stat().st_size
    del marker["pipeline"]
    (part / "_SUCCESS").write_text(json.dumps(marker))
    again = score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-20"))
    assert again == marker  # complete already (by its model, as then): nothing to do
    # ... whatever the settings, as before pipeline ids: a retry stays a no-op
    assert score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-20",
                             draft="true")) == marker
    night = score_job.run(cfg(input=lake, model=models[0], output=out, run_date="2026-11-21"))
    assert (night["scored"], night["reused"]) == (0, 12)
    rows = read_partition(str(out / "date=2026-11-21"))
    assert set(rows["pipeline"]) == {first["pipeline"]} and sorted(rows["path"]) == (
        image_files(lake))
    # its report compares the old rows by model: the same model, no roll-out, no movers
    data = write_report(str(out / "date=2026-11-21"), str(out))
    assert data["previous"] == str(part) and data["model_change"] is None
    assert data["unexpected_changes"]["count"] == 0 and data["warnings"] == {}
    drafted = score_job.run(cfg(input=lake, model=models[0], output=out,
                                run_date="2026-11-22", draft="true"))
    assert drafted["reused"] == 0
    assert write_report(str(out / "date=2026-11-22"), str(out))["model_change"]["pairs"] == 12
    # against the old night itself, another pipeline of the same model is a change too
    against_old = figures(str(out / "date=2026-11-22"), str(part)).data
    assert against_old["model_change"]["pairs"] == 12
    assert against_old["unexpected_changes"]["count"] == 0


def test_facts_compare_row_by_row_with_unknowns_equal():
    listed = pd.DataFrame({"size": pd.array([10, 10, 10, None, 10], dtype="Int64"),
                           "mtime": [1.0, 1.0, None, 1.0, 1.5],
                           "etag": ["a", None, "a", "a", "a"]})
    before = pd.DataFrame({"size": [10.0, 10.0, 10.0, None, 10.0],  # as pandas may read them
                           "mtime": [1.0, 1.0, None, 1.0, 1.0],
                           "etag": ["a", None, "a", "b", "a"]}, index=[7, 8, 9, 10, 11])
    assert list(same_facts(listed, before)) == [True, True, True, False, False]
    assert list(same_facts(listed.iloc[:0], before.iloc[:0])) == []
