"""The Ray Train job on a local Ray with 2 CPU workers, at 64 px."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fiqa_core import Scorer, read_checkpoint_config
from fiqa_core.config import ConfigError, resolve_config
from jobs import faults
from jobs import train as train_job
from jobs.cli import format_cause
from tests import imagegen

FAST = [
    "pretrained=false",
    "image_size=64",
    "num_workers=2",
    "batch_size=16",
    "lr=1e-3",
]


def config(tmp_path, *overrides, labels=None):
    labels = labels or str(tmp_path / "labels.csv")
    return resolve_config(
        train_job.TrainConfig,
        None,
        [f"labels={labels}", f"output={tmp_path / 'model'}", *FAST, *overrides],
    )


def labeled_set(folder, n, seed=0):
    rows = imagegen.write_labeled_set(folder / "images", n, seed=seed)
    pd.DataFrame([(f"images/{f}", s) for f, s in rows], columns=["path", "score"]).to_csv(
        folder / "labels.csv", index=False
    )
    return rows


def history(cfg, event="epoch"):
    h = read_checkpoint_config(cfg.output).lineage["history"]
    return [e for e in h if e["event"] == event]


# -- configuration errors: no Ray needed --------------------------------------------------


def test_bad_configuration_is_refused_with_the_fix(tmp_path):
    (tmp_path / "labels.csv").write_text("path,mos\na.jpg,3\n")
    with pytest.raises(ValueError, match=r"labels.csv: column 'score' missing \(have: path, mos\)"):
        train_job.run(config(tmp_path))
    (tmp_path / "labels.csv").write_text("path,score\na.jpg,3\nb.jpg,good\n")
    with pytest.raises(ValueError, match=r"1 score\(s\) are not numbers, first at row 3 \('b.jpg'"):
        train_job.run(config(tmp_path))
    with pytest.raises(ValueError, match="unknown preset 'vit'.*teacher-swin-b"):
        train_job.run(config(tmp_path, "preset=vit"))
    with pytest.raises(ValueError, match="nope.csv: labels table not found"):
        train_job.run(config(tmp_path, labels=str(tmp_path / "nope.csv")))
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        config(tmp_path, "epoch=3")
    with pytest.raises(ConfigError, match="epochs must be a number"):
        config(tmp_path, "epochs=many")
    with pytest.raises(ConfigError, match=r"batch_size \(15\) must be a multiple of num_workers"):
        train_job.run(config(tmp_path, "batch_size=15"))
    with pytest.raises(ConfigError, match="missing required setting"):
        resolve_config(train_job.TrainConfig, None, [])


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    code = train_job.main(
        train_job.get_args_parser().parse_args([f"labels={tmp_path}/x.csv",
                                                f"output={tmp_path}/o"])
    )
    assert code == 2 and not (tmp_path / "o").exists()  # bad input: nothing written
    assert "x.csv: labels table not found" in capsys.readouterr().out


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "t.yaml").write_text("labels: a.csv\noutput: out\nepochs: 5\nlr: 3.0e-4\n")
    cfg = resolve_config(train_job.TrainConfig, str(tmp_path / "t.yaml"), ["epochs=2"])
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.seed) == (2, 3e-4, 1e-6, 42)


# -- real training on a local Ray ------------------------------------------------------


def test_no_readable_images_is_a_clear_error(tmp_path, ray_local):
    pd.DataFrame({"path": [f"missing_{i}.jpg" for i in range(10)], "score": range(10)}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(ValueError, match=r"too few readable images.*'missing': 10.*images_root"):
        train_job.run(config(tmp_path))


def test_student_learns_and_checkpoint_is_complete(tmp_path, ray_local, capsys):
    labeled_set(tmp_path, 80)
    cfg = config(tmp_path, "epochs=8")
    final = train_job.run(cfg)
    epochs = history(cfg)
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    srcc = [e["srcc"] for e in epochs]
    # label = 1 + 4 * brightness: from scratch it goes from chance to a clear ranking
    assert max(srcc) > 0.6 and max(srcc) > srcc[0] + 0.3, srcc
    # the student keeps its best epoch by (SRCC+PLCC)/2, which need not be the best SRCC
    best = max(epochs, key=lambda e: e["challenge"])
    assert final.lineage["best_epoch"] == best["epoch"]
    assert final.metrics["srcc"] == best["srcc"] and final.metrics["challenge"] == max(
        e["challenge"] for e in epochs
    )
    assert all(e["rows_seen"] == 64 for e in epochs)  # 80 labeled, 80/20 split
    split = pd.read_parquet(final.lineage["split"])
    assert (split["split"] == "val").sum() == 16 and len(split) == 80
    # calibration fitted on the 64 training images, and it maps raw onto the label scale
    assert final.lineage["calibration_fitted_on"] == "labeled train split (64 images)"
    scorer = Scorer.from_checkpoint(cfg.output, device="cpu")
    val = split[split["split"] == "val"]
    out = scorer.score([open(p, "rb").read() for p in val["path"]])
    assert (out["status"] == "ok").all()
    assert abs(np.mean(out["score"]) - val["score"].mean()) < 1.0
    assert (tmp_path / "model" / "train_config.yaml").exists()
    assert final.lineage["config_hash"] == train_job.config_hash(cfg, train_job.OPERATIONAL)
    # rerunning a finished job does nothing and says so
    capsys.readouterr()
    again = train_job.run(cfg)
    assert again.id == final.id
    assert "already trained with this config; nothing to do" in capsys.readouterr().out


def write_pseudo_shards(folder, images, scores, statuses):
    folder.mkdir(parents=True)
    n = len(images)
    half = n // 2
    for part, sl in enumerate((slice(0, half), slice(half, n))):
        pq.write_table(
            pa.table(
                {
                    "path": images[sl],
                    "score": scores[sl],
                    "raw_score": scores[sl],
                    "model": ["teacher-x"] * len(images[sl]),
                    "status": statuses[sl],
                    "error": [None] * len(images[sl]),
                }
            ),
            folder / f"part-{part}.parquet",
        )


def test_pseudo_labels_are_counted_and_a_failed_worker_resumes(tmp_path, ray_local):
    labeled_set(tmp_path, 40)  # 32 train + 8 val
    pseudo_rows = imagegen.write_labeled_set(tmp_path / "lake", 31, seed=7)
    images = [str(tmp_path / "lake" / f) for f, _ in pseudo_rows]
    scores = [s for _, s in pseudo_rows]
    statuses = ["ok"] * 31
    statuses[3] = statuses[4] = "corrupt"  # bad images: not trained on
    scores[5] = float("nan")  # no usable score: not trained on
    write_pseudo_shards(tmp_path / "pseudo", images, scores, statuses)

    cfg = config(tmp_path, "epochs=3", f"pseudo_labels=[{tmp_path / 'pseudo'}]", "max_failures=1")
    with faults.inject(train_fails_at_epoch=2):
        final = train_job.run(cfg)
    epochs = history(cfg)
    # each epoch saw every labeled training row and the 28 usable pseudo rows, once (an even
    # total: with N workers up to N-1 rows per epoch are left out so all take equal steps)
    assert [e["rows_by_source"] for e in epochs] == [[32, 28]] * 3
    # epoch 1 was not trained again after the failure at epoch 2: resumed from its checkpoint
    events = [
        (e["event"], e.get("epoch", e.get("after_epoch")))
        for e in read_checkpoint_config(cfg.output).lineage["history"]
    ]
    assert events == [("epoch", 1), ("resumed", 1), ("epoch", 2), ("epoch", 3)]
    assert final.lineage["rows"] == {"0": 40, "1": 28}
    assert final.lineage["pseudo_labels"] == [str(tmp_path / "pseudo")]


def test_interrupted_job_continues_when_rerun(tmp_path, ray_local, capsys):
    labeled_set(tmp_path, 24)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"")  # a bad labeled image: left out
    with open(tmp_path / "labels.csv", "a") as f:
        f.write("images/broken.jpg,3.0\n")
    # one worker: resuming is the group's, whatever its size (another test loses one of two)
    cfg = config(tmp_path, "epochs=2", "max_failures=0", "num_workers=1")
    with faults.inject(train_fails_at_epoch=2), pytest.raises(
        train_job.TrainingFailed, match="injected failure.*Rerun the same command"
    ) as failed:
        train_job.run(cfg)
    # the whole chained cause is kept (the CLI prints it), not only its last line
    cause = format_cause(failed.value)
    assert "Traceback" in cause and "in _maybe_inject_failure" in cause
    assert "1 of 25 images cannot be used and are left out" in capsys.readouterr().out
    assert not (tmp_path / "model" / "config.json").exists()
    cache = json.loads(next((tmp_path / "model.work").glob("cache-*/_SUCCESS")).read_text())
    assert cache["rows"] == 25 and cache["by_status"] == {"ok": 24, "empty": 1}
    train_job.run(cfg)  # the same command again
    events = [
        (e["event"], e.get("epoch", e.get("after_epoch")))
        for e in read_checkpoint_config(cfg.output).lineage["history"]
    ]
    assert events == [("epoch", 1), ("resumed", 1), ("epoch", 2)]


@pytest.mark.parametrize("name", ["train_teacher.yaml", "train_student.yaml"])
def test_shipped_configs_resolve(name):
    from pathlib import Path

    path = Path(train_job.__file__).parents[1] / "configs" / name
    cfg = resolve_config(train_job.TrainConfig, str(path), ["labels=l.csv", "output=o"])
    assert cfg.preset == ("teacher-swin-b" if "teacher" in name else "student-edgenext-xxs")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed) == (
        30,
        32,
        1e-4,
        1e-6,
        42,
    )
    train_job.validate(cfg)
