"""A miniature self-training round end to end (demo data, 32 px, 1 epoch), on a local Ray."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fiqa_core import Scorer, read_checkpoint_config
from fiqa_core.config import ConfigError, resolve_config
from fiqa_core.tables import read_parquet
from jobs import demo, self_train
from jobs.demo_data import label_of, write_images

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "teacher.image_size=32",
    "student.image_size=32",
    "teacher.epochs=1",
    "enhanced_teacher.epochs=1",
    "student.epochs=1",
    "teacher.batch_size=16",
    "student.batch_size=16",
    "pseudo_label.buckets=4",
    "pseudo_label.scorers=1",  # each scoring actor costs seconds of the 2 cores to start
]


def demo_args(out, *extra):
    return demo.get_args_parser().parse_args(
        ["--output", str(out), "--labeled", "40", "--test", "12", "--unlabeled", "24",
         *TINY, *extra]
    )


def round_config(out, *extra):
    settings, round_settings = demo.split_settings(demo_args(out, *extra))
    sets = demo.make_data(settings, str(Path(out) / "data"))
    return resolve_config(
        self_train.RoundConfig, None, demo.round_overrides(settings, round_settings, sets, str(out))
    )


def records(cfg):
    return {s: self_train.read_record(self_train.absolute_paths(cfg), s) for s in self_train.STAGES}


@pytest.fixture(scope="module")
def tiny_round(tmp_path_factory, ray_local):
    """Run until pseudo_a first, then let `fiqa demo` finish the same round."""
    out = tmp_path_factory.mktemp("demo")
    cfg = round_config(out)
    first = self_train.run(cfg, until_stage="pseudo_a")
    assert first == {"holdout": "ran", "teacher0": "ran", "pseudo_a": "ran"}
    assert [s for s, r in records(cfg).items() if r] == ["holdout", "teacher0", "pseudo_a"]
    assert demo.main(demo_args(out)) == 0
    return out, cfg, first


def test_round_outputs_stage_by_stage(tiny_round, capsys):
    out, cfg, _ = tiny_round
    p = self_train.layout(cfg)
    recs = records(cfg)
    assert all(r["status"] == "done" for r in recs.values())
    assert recs["holdout"]["counts"] == {"labeled": 40, "train": 40, "test": 12}
    train = read_parquet(p["train_labels"])
    test = read_parquet(p["test_labels"])
    assert len(train) == 40 and len(test) == 12 and not set(train["path"]) & set(test["path"])

    t0, t1, st = (read_checkpoint_config(p[m]) for m in self_train.MODELS)
    # pseudo-labels: one row per file (24 images + truncated + not-an-image in A; README skipped
    # in B), score = the teacher's calibration of its raw output
    a, b = read_parquet(p["pseudo_a"]), read_parquet(p["pseudo_b"])
    assert len(a) == 26 and a["path"].is_unique
    bad = a[a["status"] != "ok"].set_index(a[a["status"] != "ok"]["path"].map(os.path.basename))
    assert bad["status"].to_dict() == {"truncated.jpg": "truncated", "not_image.jpg": "not_image"}
    assert len(b) == 24 and (b["status"] == "ok").all()
    assert set(a["model"]) == {t0.id} and set(b["model"]) == {t1.id}
    ok = a[a["status"] == "ok"]
    np.testing.assert_allclose(ok["score"], t0.calibration(ok["raw_score"]), rtol=1e-9)
    # lineage: T1 on labels + A, the student on labels + A + B
    assert t1.lineage["pseudo_labels"] == [p["pseudo_a"]]
    assert st.lineage["pseudo_labels"] == [p["pseudo_a"], p["pseudo_b"]]
    assert st.lineage["rows"] == {"0": 40, "1": 24, "2": 24}  # labels, A, B
    assert t0.preset == t1.preset == st.preset == "student-edgenext-xxs"  # CPU: no Swin-B

    metrics = json.loads(Path(p["metrics"]).read_text())
    for m, ck in zip(self_train.MODELS, (t0, t1, st), strict=True):
        pred = read_parquet(str(Path(p["predictions"]) / f"{m}.parquet"))
        assert len(pred) == 12 and set(pred["model"]) == {ck.id}
        assert sorted(pred["path"]) == sorted(test["path"])
        assert metrics[m]["model"] == ck.id and metrics[m]["metrics"]["images"] == 12
        assert -1 <= metrics[m]["metrics"]["srcc"] <= 1
    assert metrics["student"]["cost"]["params"] == 1_179_641
    assert metrics["student"]["cost"]["within_limit"] is True

    report = Path(p["report"]).read_text()
    assert report.startswith("# fiqa demo round")
    for png in ("predictions.png", "pseudo_labels.png", "agreement.png"):
        assert f"]({png})" in report
        assert (Path(p["report"]).parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| A | 26 | 24 | not_image: 1, truncated: 1 |" in report
    assert "| T0 vs T1 |" in report and "| T1 vs student |" in report
    assert f"| student | student-edgenext-xxs | {metrics['student']['metrics']['srcc']:.4f} |" in (
        report
    )


def test_rerun_skips_every_stage_and_changes_no_record(tiny_round, capsys):
    out, cfg, _ = tiny_round
    before = {s: Path(self_train.record_uri(cfg, s)).read_bytes() for s in self_train.STAGES}
    assert set(self_train.run(cfg).values()) == {"skipped"}
    after = {s: Path(self_train.record_uri(cfg, s)).read_bytes() for s in self_train.STAGES}
    assert after == before
    assert "0 stage(s) run, 8 skipped" in capsys.readouterr().out


def test_stage_keys_follow_the_dependency_graph(tiny_round):
    _, cfg, _ = tiny_round
    base = self_train.stage_keys(cfg)

    def changed(**kw):
        new = self_train.stage_keys(cfg.__class__(**{**cfg.__dict__, **kw}))
        return [s for s in self_train.STAGES if new[s] != base[s]]

    assert changed(address="ray://elsewhere:10001") == []  # operational
    assert changed(pseudo_label={**cfg.pseudo_label, "batch_size": 7}) == []  # operational
    assert changed(pseudo_label={**cfg.pseudo_label, "buckets": 8}) == list(
        self_train.STAGES[2:]
    )
    assert changed(enhanced_teacher={**cfg.enhanced_teacher, "lr": 5e-4}) == list(
        self_train.STAGES[3:]
    )
    assert changed(student={**cfg.student, "epochs": 2}) == ["student", "evaluate", "report"]
    assert changed(title="another title") == ["report"]
    assert changed(seed=7) == list(self_train.STAGES)  # holdout is seeded


def test_evaluate_cli_matches_the_round(tiny_round, capsys):
    from jobs import evaluate

    out, cfg, _ = tiny_round
    p = self_train.layout(cfg)
    args = evaluate.get_args_parser().parse_args(
        ["--model", p["student"], "--labels", p["test_labels"], "--json"]
    )
    assert evaluate.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    round_metrics = json.loads(Path(p["metrics"]).read_text())["student"]["metrics"]
    for k in ("srcc", "plcc", "krcc", "rmse", "challenge", "rmse_calibrated"):
        assert result["metrics"][k] == pytest.approx(round_metrics[k], abs=1e-6)
    # the text form says whether the model meets the challenge limit
    args = evaluate.get_args_parser().parse_args(["--model", p["teacher0"], "--labels",
                                                  p["test_labels"]])
    assert evaluate.main(args) == 0
    text = capsys.readouterr().out
    assert "1,179,641 params" in text and "meets the challenge limit" in text
    args = evaluate.get_args_parser().parse_args(["--model", p["student"], "--labels", "no.csv"])
    assert evaluate.main(args) == 2
    assert "no.csv: labels table not found" in capsys.readouterr().out


def test_evaluate_reports_a_model_over_the_limit(tmp_path, capsys):
    """Swin-B's cost is counted at its input size: far over 5 M params and 0.5 GMACs."""
    from fiqa_core import create_model, save_checkpoint
    from jobs import evaluate
    from jobs.demo_data import load_photos

    rows = write_images(str(tmp_path / "img"), 6, seed=1, stream=9, photos=load_photos())
    pd.DataFrame([(f"img/{f}", s) for f, s in rows], columns=["path", "score"]).to_csv(
        tmp_path / "test.csv", index=False
    )
    save_checkpoint(create_model("teacher-swin-b", image_size=64), str(tmp_path / "swin"))
    args = evaluate.get_args_parser().parse_args(
        ["--model", str(tmp_path / "swin"), "--labels", str(tmp_path / "test.csv"), "--json",
         "--output", str(tmp_path / "pred.parquet")]
    )
    assert evaluate.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preset"] == "teacher-swin-b" and result["metrics"]["images"] == 6
    assert result["cost"]["params"] > 86_000_000 and result["cost"]["image_size"] == 64
    assert result["cost"]["within_limit"] is False
    pred = pd.read_parquet(tmp_path / "pred.parquet")
    assert len(pred) == 6 and (pred["status"] == "ok").all()
    np.testing.assert_allclose(pred["label"], [s for _, s in rows])


def test_notebook_executes_against_the_round(tiny_round):
    import nbformat
    from nbclient import NotebookClient

    out, cfg, _ = tiny_round
    nb = nbformat.read(ROOT / "notebooks" / "explore_round.ipynb", as_version=4)
    os.environ["FIQA_ROUND"] = cfg.output
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        del os.environ["FIQA_ROUND"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    last = nb.cells[-1].outputs[0]["text"]
    assert last.strip() == "explored: 3 models, 50 pseudo-label rows, 12 held-out images"


def test_configuration_errors_name_the_fix(tmp_path, tiny_round):
    _, cfg, _ = tiny_round
    bad = cfg.__class__(**{**cfg.__dict__, "teacher": {**cfg.teacher, "labels": "x.csv"}})
    with pytest.raises(ConfigError, match="teacher.labels: the round sets labels itself"):
        self_train.plan_stages(bad)
    bad = cfg.__class__(**{**cfg.__dict__, "student": {"epoch": 3}})
    with pytest.raises(ConfigError, match="round student: unknown setting 'epoch'"):
        self_train.plan_stages(bad)
    typo = resolve_config(
        self_train.RoundConfig, None, [*_required(tmp_path, cfg.labels), "student.epochs=x"]
    )
    with pytest.raises(ConfigError, match="round student: epochs must be a number, got 'x'"):
        self_train.run(typo)  # refused before any stage runs
    assert not (tmp_path / "r" / "stages").exists()
    fresh = resolve_config(self_train.RoundConfig, None, _required(tmp_path, cfg.labels))
    with pytest.raises(ConfigError, match="--from-stage teacher1: the earlier stage holdout is "
                                          "not done"):
        self_train.run(fresh, from_stage="teacher1")
    code = self_train.main(argparse.Namespace(config=str(tmp_path / "nope.yaml"), overrides=[],
                                              from_stage=None, until_stage=None))
    assert code == 2


def _required(tmp_path, labels="labels.csv"):
    return [f"labels={labels}", "unlabeled_a=a", "unlabeled_b=b", f"output={tmp_path}/r"]


def test_cli_runs_a_finished_round_as_a_no_op(tiny_round):
    _, cfg, _ = tiny_round
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "self-train", "--config",
         str(Path(cfg.output) / "round.yaml")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 stage(s) run, 8 skipped" in proc.stdout


def test_an_interrupted_stage_resumes(tiny_round, capsys):
    """A record left "running" (the process died) with the same key: the stage resumes."""
    _, cfg, _ = tiny_round
    uri = self_train.record_uri(cfg, "student")
    record = json.loads(Path(uri).read_text())
    started, checkpoint = record["started"], read_checkpoint_config(record["outputs"]["checkpoint"])
    Path(uri).write_text(json.dumps({**record, "status": "running"}))
    outcome = self_train.run(cfg, until_stage="student")
    assert outcome == {**{s: "skipped" for s in self_train.STAGES[:5]}, "student": "resumed"}
    out = capsys.readouterr().out
    assert "[6/8] student: resuming" in out and "already trained with this config" in out
    after = json.loads(Path(uri).read_text())
    assert after["status"] == "done" and after["started"] == started
    assert read_checkpoint_config(record["outputs"]["checkpoint"]).id == checkpoint.id


def test_a_missing_extra_is_refused_before_the_stage_that_needs_it(tiny_round, monkeypatch):
    """Without matplotlib a finished round still reruns as a no-op; a report to write is
    refused up front, naming the extra, before any stage runs."""
    import importlib.util

    from fiqa_core.extras import MissingExtra

    _, cfg, _ = tiny_round
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert set(self_train.run(cfg).values()) == {"skipped"}
    before = self_train.read_record(self_train.absolute_paths(cfg), "report")
    missing = r"plotting the round report needs matplotlib.*pip install 'fiqa\[report\]'"
    with pytest.raises(MissingExtra, match=missing):
        self_train.run(cfg, from_stage="report")
    assert self_train.read_record(self_train.absolute_paths(cfg), "report") == before


def test_a_failed_stage_records_its_whole_cause_and_resumes(tiny_round, monkeypatch, capsys):
    """A bug inside a stage: the record keeps the chained traceback; a rerun resumes it."""
    from jobs.self_train import report

    _, cfg, _ = tiny_round

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plot backend exploded")

    monkeypatch.setattr(report, "write_report", broken_plot)
    failure = "stage report failed: RuntimeError: plot"
    with pytest.raises(self_train.StageFailed, match=failure) as e:
        self_train.run(cfg, from_stage="report")
    assert isinstance(e.value.__cause__, RuntimeError)
    record = self_train.read_record(self_train.absolute_paths(cfg), "report")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: plot backend exploded"
    assert record["cause"].startswith("Traceback") and "in broken_plot" in record["cause"]
    monkeypatch.undo()
    assert self_train.run(cfg)["report"] == "resumed"
    assert self_train.read_record(self_train.absolute_paths(cfg), "report")["status"] == "done"


def test_changed_student_setting_reruns_student_evaluate_report(tiny_round, capsys):
    """Runs last in this module: it changes the round."""
    out, cfg, _ = tiny_round
    old_student = read_checkpoint_config(self_train.layout(cfg)["student"]).id
    cfg2 = cfg.__class__(**{**cfg.__dict__, "student": {**cfg.student, "epochs": 2}})
    outcome = self_train.run(cfg2)
    assert [s for s, v in outcome.items() if v == "ran"] == ["student", "evaluate", "report"]
    p = self_train.layout(cfg2)
    new = read_checkpoint_config(p["student"])
    assert new.id != old_student and new.lineage["epochs"] == 2
    assert json.loads(Path(p["metrics"]).read_text())["student"]["model"] == new.id
    assert self_train.run(cfg2, from_stage="report") == {
        **{s: "skipped" for s in self_train.STAGES[:-1]}, "report": "ran"
    }
    scorer = Scorer.from_checkpoint(p["student"], device="cpu")
    assert scorer.model_id == new.id


def test_demo_labels_follow_the_documented_severity_function(tmp_path):
    from jobs.demo_data import load_photos

    photos = load_photos()
    rows = write_images(str(tmp_path / "a"), 6, seed=3, stream=1, photos=photos)
    again = write_images(str(tmp_path / "b"), 6, seed=3, stream=1, photos=photos)
    assert rows == again  # seeded: same labels
    assert (tmp_path / "a" / rows[0][0]).read_bytes() == (tmp_path / "b" / rows[0][0]).read_bytes()
    for i, (name, label) in enumerate(rows):
        severity = np.random.default_rng([3, 1, i]).uniform(0, 1)
        assert label == pytest.approx(label_of(severity)) == pytest.approx(5 - 4 * severity)
        assert name.endswith(".png" if i % 2 else ".jpg")
