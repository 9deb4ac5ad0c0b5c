"""Pseudo-labeling and nightly scoring over a generated lake, on a local Ray."""

import dataclasses
import json
import os

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from fiqa_core import Calibration, Scorer, create_model, save_checkpoint
from fiqa_core.config import resolve_config
from jobs import faults
from jobs import score as score_job
from jobs.score import planning
from tests import imagegen

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "student")
    save_checkpoint(
        create_model("student-edgenext-xxs", image_size=SIZE),
        path,
        calibration=Calibration(5.0, 1.0, 0.0, 0.05),
    )
    return path


def make_lake(root, n_jpeg=120, n_png=80, zoo=True):
    """Images in two subfolders (+ a nested one), the bad-file zoo and non-image files."""
    imagegen.write_labeled_set(root / "people" / "jpeg", n_jpeg, seed=1, size=(40, 48))
    imagegen.write_labeled_set(
        root / "people" / "png" / "deep", n_png, seed=2, size=(40, 48), fmt="PNG"
    )
    expected = {}
    if zoo:
        for name, (data, status) in imagegen.zoo(imagegen.real_photos()[1][:60, :60]).items():
            path = root / f"zoo_{name}.jpg"  # image extension, whatever the content
            path.write_bytes(data)
            expected[str(path)] = status
    (root / "README.txt").write_text("not an image")
    (root / "people" / "meta.json").write_text("{}")
    return expected


def image_files(root):
    return sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if os.path.splitext(f)[1].lower() in {".jpg", ".png"}
    )


def read_partition(uri) -> pd.DataFrame:
    fs, root = fsspec.core.url_to_fs(uri)
    files = [p for p in fs.find(root) if p.endswith(".parquet")]
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def cfg(**kw):
    """Test settings: small buckets and batches, one scoring actor (each costs ~2 s of CPU
    to start, every run); no report (tests/test_report.py has its own) unless
    ``report=true``."""
    return resolve_config(
        score_job.ScoreConfig,
        None,
        ["report=false", "scorers=1"] + [f"{k}={v}" for k, v in kw.items()]
        + ["buckets=8", "decode_batch_size=16", "batch_size=32", "precision=fp32"],
    )


def test_pseudo_label_scores_every_file_once_with_its_status(
    tmp_path, checkpoint, ray_local, capsys
):
    lake = tmp_path / "lake"
    zoo = make_lake(lake)
    files = image_files(lake)
    out = tmp_path / "pl"
    summary = score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)

    df = read_partition(str(out))
    assert len(df) == len(files) == summary["rows"] == summary["images"]
    assert sorted(df["path"]) == files  # no image lost, none twice
    assert summary["skipped_non_image"] == 2 and summary["files_listed"] == len(files) + 2
    by_path = df.set_index("path")
    for path, status in zoo.items():
        assert by_path.at[path, "status"] == status, path
        assert (status == "ok") == np.isfinite(by_path.at[path, "score"])
        assert pd.isna(by_path.at[path, "error"]) == (status == "ok")
    good = df[df["status"] == "ok"]
    assert len(good) == 200 + sum(s == "ok" for s in zoo.values())
    assert summary["by_status"]["ok"] == len(good) and summary["failed"] == len(df) - len(good)
    # the same numbers Scorer gives, and score = calibration(raw_score)
    scorer = Scorer.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    sample = good.sample(12, random_state=0)
    want = scorer.score([open(p, "rb").read() for p in sample["path"]])
    np.testing.assert_allclose(sample["raw_score"], want["raw_score"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(good["score"], Calibration(5.0, 1.0, 0.0, 0.05)(good["raw_score"]))
    assert set(df["model"]) == {scorer.model_id}
    # file facts for incremental reruns
    row = by_path.loc[files[0]]
    assert row["size"] == os.path.getsize(files[0])
    assert row["mtime"] == pytest.approx(os.path.getmtime(files[0]))
    marker = json.loads((out / "_SUCCESS").read_text())
    assert marker["rows"] == len(files) and marker["model"] == scorer.model_id
    # a few large files: one write task for this run, so at most one file per bucket
    written = sorted(out.rglob("*.parquet"))
    assert marker["files"] == len(written) <= 8
    assert all(len(list(b.glob("*.parquet"))) == 1 for b in out.glob("bucket=*"))
    # and each file is one row group, not one per 16-row block (metadata 9x the data)
    assert {pq.ParquetFile(f).metadata.num_row_groups for f in written} == {1}
    assert "images/s" in capsys.readouterr().out

    # a rerun of a finished run changes nothing
    before = sorted(p.name for p in out.rglob("*.parquet"))
    again = score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)
    assert again == marker and sorted(p.name for p in out.rglob("*.parquet")) == before


@pytest.mark.parametrize("planned_in", ["driver", "tasks"])
def test_nightly_rescoring_is_incremental(tmp_path, checkpoint, ray_local, planned_in,
                                          monkeypatch):
    if planned_in == "tasks":  # as a listing of over 100k images is: shuffled by bucket
        monkeypatch.setattr(planning, "PLAN_IN_DRIVER_ROWS", 0)
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=40, n_png=20, zoo=False)
    out = tmp_path / "scores"
    first = score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date="2026-11-20"))
    assert first["scored"] == 60 and first["reused"] == 0

    # next night: 5 new images, 3 changed ones
    imagegen.write_labeled_set(lake / "people" / "new", 5, seed=9, size=(40, 48))
    changed = image_files(lake / "people" / "jpeg")[:3]
    for p in changed:
        img = np.asarray(imagegen.real_photos()[0][:40, :48])
        with open(p, "wb") as f:
            f.write(imagegen.encode(img, "JPEG", quality=70))
    second = score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date="2026-11-21"))
    assert (second["scored"], second["reused"], second["rows"]) == (8, 57, 65)
    assert second["by_status"] == {"ok": 65} and second["failed"] == 0
    assert second["scored"] + second["reused"] == second["images"]

    day1 = read_partition(str(out / "date=2026-11-20")).set_index("path")
    day2 = read_partition(str(out / "date=2026-11-21")).set_index("path")
    assert len(day2) == 65 and day2.index.is_unique
    # per bucket (8): one file of rows carried forward, one of the rows scored
    assert second["files"] == len(list((out / "date=2026-11-21").rglob("*.parquet"))) <= 16
    assert len(list((out / "date=2026-11-21").rglob("reused-*.parquet"))) == 8
    rescored = set(day2.index[~day2["reused"]])
    assert rescored == set(changed) | set(image_files(lake / "people" / "new"))
    kept = day2[day2["reused"]]
    np.testing.assert_array_equal(kept["raw_score"], day1.loc[kept.index, "raw_score"])
    assert (kept["scored_at"] == day1.loc[kept.index, "scored_at"]).all()

    # a night with nothing changed: every row carried, none scored (in tasks, the plan
    # streams into a pipeline that meets no rows)
    third = score_job.run(cfg(input=lake, model=checkpoint, output=out, run_date="2026-11-22"))
    assert (third["scored"], third["reused"], third["rows"]) == (0, 65, 65)
    day3 = read_partition(str(out / "date=2026-11-22")).set_index("path")
    assert day3["reused"].all() and len(day3) == 65 and day3.index.is_unique
    np.testing.assert_array_equal(day3["raw_score"], day2.loc[day3.index, "raw_score"])


def test_interrupted_runs_complete_without_duplicates(tmp_path, checkpoint, ray_local):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=50, n_png=30, zoo=False)
    files = image_files(lake)
    out = tmp_path / "pl"
    # a scoring actor dies mid-run: Ray restarts it and the job still completes
    with faults.inject(score_actor_dies_after_batches=1):
        summary = score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)
    df = read_partition(str(out))
    assert summary["rows"] == len(files) and sorted(df["path"]) == files
    assert not (out / "_fault_injected").exists()

    # what a killed job leaves: no _SUCCESS, some buckets missing, one shard cut short
    (out / "_SUCCESS").unlink()
    buckets = sorted(out.glob("bucket=*"))
    lost = sum(len(pq.read_table(f)) for b in buckets[:3] for f in b.glob("*.parquet"))
    for b in buckets[:3]:
        for f in b.glob("*.parquet"):
            f.unlink()
    cut = next(buckets[3].glob("*.parquet"))
    lost += len(pq.read_table(cut))
    cut.write_bytes(cut.read_bytes()[:100])
    again = score_job.run(cfg(input=lake, model=checkpoint, output=out), nightly=False)
    df = read_partition(str(out))
    assert sorted(df["path"]) == files  # each image exactly once
    # at most one file per bucket per attempt: the first run's and the resumed run's
    per_bucket = [len(list(b.glob("*.parquet"))) for b in out.glob("bucket=*")]
    assert max(per_bucket) <= 2 and again["files"] == sum(per_bucket) <= 2 * 8
    assert again["rows"] == len(files) and again["scored"] == len(files)
    assert (out / "_SUCCESS").exists()
    assert lost > 0


def test_manifest_input_and_missing_files(tmp_path, checkpoint, ray_local):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=10, n_png=0, zoo=False)
    # a path listed twice is one image, one row
    paths = image_files(lake) + [image_files(lake)[0], str(lake / "gone.jpg"),
                                 str(lake / "notes.txt")]
    pd.DataFrame({"path": paths}).to_parquet(tmp_path / "manifest.parquet")
    summary = score_job.run(
        cfg(input=tmp_path / "manifest.parquet", model=checkpoint, output=tmp_path / "pl"),
        nightly=False,
    )
    df = read_partition(str(tmp_path / "pl")).set_index("path")
    assert summary["images"] == 11 == summary["rows"] and summary["skipped_non_image"] == 1
    assert len(df) == 11 and df.index.is_unique
    assert df.at[str(lake / "gone.jpg"), "status"] == "missing"
    assert summary["by_status"] == {"ok": 10, "missing": 1}


def test_empty_input_folder_is_a_clear_error(tmp_path, checkpoint, ray_local):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no files found"):
        score_job.run(cfg(input=tmp_path / "empty", model=checkpoint, output=tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="no such folder or prefix"):
        score_job.run(cfg(input=tmp_path / "absent", model=checkpoint, output=tmp_path / "o"))
    # files, but no image among them: an error, not an empty partition a night plans from
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"notes: no image files among its 1 files"):
        score_job.run(cfg(input=tmp_path / "notes", model=checkpoint, output=tmp_path / "o"))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("_SUCCESS"))


def test_bad_configuration(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="not a fiqa checkpoint"):
        score_job.run(cfg(input=tmp_path, model=tmp_path / "nope", output=tmp_path / "o"))
    with pytest.raises(ValueError, match="run_date must be YYYY-MM-DD"):
        score_job.run(
            cfg(input=tmp_path, model=checkpoint, output=tmp_path / "o", run_date="yesterday")
        )


def test_decoding_runs_in_its_own_tasks_not_fused_into_the_scorers(ray_local, checkpoint, capsys):
    """Read and decode fuse into one task operator (the bytes never enter the object
    store), which is not fused into the scorers (decoding runs on every CPU)."""
    import ray

    from fiqa_core.engines import preflight
    from jobs.score.pipeline import decode_task_memory
    from jobs.score.stages import Context, build

    c = cfg(input="unused/", model=checkpoint, output="unused")
    rows = ray.data.from_items([{"path": "a.jpg", "size": 1, "mtime": 0.0, "etag": "",
                                 "bucket": 0}])
    capsys.readouterr()
    build(rows, Context(c, preflight(c, {"CPU": 2}), "now", "pl-x")).explain()
    physical = capsys.readouterr().out.split("Physical Plan")[-1]
    assert "ActorPoolMapOperator[MapBatches(ScoreActor)]" in physical
    assert "TaskPoolMapOperator[MapBatches(read_batch)->MapBatches(decode_batch)]" in physical
    assert "decode_batch)->" not in physical  # not fused with the scoring actors
    # the reservation is settable, and the estimate grows with what a task holds at once
    bigger = dataclasses.replace(c, decode_batch_size=64)
    assert 300 * 2**20 < decode_task_memory(c, SIZE) < decode_task_memory(bigger, SIZE)
    fixed = cfg(input="unused/", model=checkpoint, output="unused", decode_task_mb=100)
    assert decode_task_memory(fixed, SIZE) == 100 * 2**20


def test_cpu_budget_split_between_scorers_and_decoding(ray_local, checkpoint, monkeypatch):
    """On CPUs: single-threaded actors on 3/4 of the cores, the rest decode; one per GPU."""
    from fiqa_core import read_checkpoint_config
    from jobs import ray_env
    from jobs.score import actor as pipeline

    for cores, actors in [(1, 1), (2, 2), (4, 3), (16, 12)]:
        monkeypatch.setattr(ray_env, "cluster_cores", lambda c=cores: c)
        assert pipeline.default_scorers(use_gpu=False) == actors
    assert pipeline.default_scorers(use_gpu=True) == 1  # this cluster has no GPUs: at least 1
    # an actor runs torch on the threads it was given, whatever Ray pinned
    threads = torch.get_num_threads()
    try:
        options = {"device": "cpu", "threads": 1, "precision": "fp32"}
        actor = pipeline.ScoreActor("fiqa_core.engines.torch_engine:load", checkpoint, options,
                                    read_checkpoint_config(checkpoint).id, "pl-x", "now")
        assert torch.get_num_threads() == 1 and actor.scorer.batch_size == 8
    finally:
        torch.set_num_threads(threads)


def test_many_write_tasks_per_bucket_keep_one_row_per_image(tmp_path, checkpoint, ray_local):
    """Small write batches: several files per bucket, still each image once, and a resumed
    run reads every file of a bucket to find what is done."""
    lake = tmp_path / "lake"
    for i in range(6):  # six listing tasks: blocks of rows that reach the writer apart
        imagegen.write_labeled_set(lake / f"part{i}", 20, seed=i, size=(40, 48))
    files = image_files(lake)
    out = tmp_path / "pl"
    tiny = {"write_batch_mb": 0.0001}  # a write task per block of rows
    summary = score_job.run(cfg(input=lake, model=checkpoint, output=out, **tiny), nightly=False)
    per_bucket = [len(list(b.glob("*.parquet"))) for b in out.glob("bucket=*")]
    assert max(per_bucket) > 1  # several write tasks wrote into one bucket
    assert summary["files"] == sum(per_bucket)
    df = read_partition(str(out))
    assert sorted(df["path"]) == files and summary["rows"] == len(files)
    # resume: drop _SUCCESS and one file of a bucket holding several; only its rows redo
    (out / "_SUCCESS").unlink()
    crowded = next(b for b in out.glob("bucket=*") if len(list(b.glob("*.parquet"))) > 1)
    victim = next(crowded.glob("*.parquet"))
    lost = len(pq.read_table(victim))
    victim.unlink()
    again = score_job.run(cfg(input=lake, model=checkpoint, output=out, **tiny), nightly=False)
    df = read_partition(str(out))
    assert sorted(df["path"]) == files and again["rows"] == len(files)
    assert (df["scored_at"] == again["run_started"]).sum() == lost  # only the lost rows redone


def test_jpegs_decoded_in_the_scoring_actors_give_the_same_rows(tmp_path, checkpoint, ray_local):
    """device_decode: JPEGs go to the actors as bytes and are decoded there in batches (the
    GPU path, here on the CPU); statuses, sizes and rows are those of the decode tasks."""
    from fiqa_core.metrics import srcc

    lake = tmp_path / "lake"
    expected = make_lake(lake, n_jpeg=40, n_png=10)
    runs = {}
    for mode in ("false", "true"):
        out = tmp_path / f"pl-{mode}"
        score_job.run(cfg(input=lake, model=checkpoint, output=out, device_decode=mode),
                      nightly=False)
        runs[mode] = read_partition(str(out)).set_index("path").sort_index()
    tasks, actors = runs["false"], runs["true"]
    assert list(actors.index) == image_files(lake)  # one row per image, none lost
    for column in ("status", "error", "width", "height"):
        pd.testing.assert_series_equal(actors[column], tasks[column], check_dtype=False)
    for path, status in expected.items():
        assert actors.at[path, "status"] == status
    ok = tasks["status"] == "ok"
    assert srcc(tasks.loc[ok, "raw_score"], actors.loc[ok, "raw_score"]) >= 0.99
    assert (actors.loc[ok, "raw_score"] - tasks.loc[ok, "raw_score"]).abs().max() < 0.01
