"""A night's report (_report.json, _report.html): its figures against the Parquet rows,
drift against a direct computation, the model-change section, the gallery, a page with
nothing to fetch."""

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from fiqa_core.drift import Extremes, ScoreSummary, UniformSample, psi
from jobs import report
from jobs import score as score_job
from jobs.cli import main as cli_main
from jobs.score.commit import verify
from tests import imagegen
from tests.test_nights import models  # noqa: F401  (the fixture: two student checkpoints)
from tests.test_score import cfg, image_files, make_lake, read_partition


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def _page_images(page: str) -> list[bytes]:
    """Every inline image of a page; the page must fetch nothing."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"url\(([^)]*)\)", page)
    assert all(r.startswith("data:image/") for r in refs), [r[:40] for r in refs]
    return [base64.b64decode(r.split(",", 1)[1]) for r in refs]


def test_three_nights_reports_against_the_parquet_rows(tmp_path, models, ray_local):  # noqa: F811
    lake = tmp_path / "lake"
    zoo = make_lake(lake, n_jpeg=24, n_png=6)
    out = tmp_path / "scores"
    a, b = models
    score_job.run(cfg(input=lake, model=a, output=out, run_date="2026-11-20", report="true"))
    night1 = read_partition(str(out / "date=2026-11-20"))
    threshold = float(_ok(night1)["score"].median())

    changed = image_files(lake / "people" / "jpeg")[:3]
    for p in changed:  # other bytes: rescored
        with open(p, "wb") as f:
            f.write(imagegen.encode(np.asarray(imagegen.real_photos()[0][:40, :48]), "JPEG"))
    imagegen.write_labeled_set(lake / "people" / "new", 2, seed=9, size=(40, 48))
    score_job.run(cfg(input=lake, model=a, output=out, run_date="2026-11-21", report="true",
                      report_threshold=threshold))
    part2 = out / "date=2026-11-21"
    data = json.loads((part2 / report.JSON).read_text())
    rows = read_partition(str(part2))
    ok, ok1 = _ok(rows), _ok(night1)

    # every count is the Parquet rows'
    c = data["counts"]
    assert (c["rows"], c["images"]) == (len(rows), len(rows))
    assert (c["scored"], c["reused"]) == (int((~rows["reused"]).sum()), int(rows["reused"].sum()))
    assert c["by_status"] == rows["status"].value_counts().to_dict()
    assert c["failed"] == int((rows["status"] != "ok").sum()) == len(
        [s for s in zoo.values() if s != "ok"])
    assert c["skipped_non_image"] == 2 and c["scored"] == 5  # 3 changed, 2 new
    for status, f in data["failures"].items():
        by_path = rows.set_index("path")
        assert f["count"] == int((rows["status"] == status).sum())
        assert all(by_path.at[e["path"], "status"] == status for e in f["examples"])

    # drift: a direct computation on the two partitions
    s, g = data["scores"], data["drift"]
    assert s["count"] == len(ok) and s["mean"] == pytest.approx(ok["score"].mean())
    assert s["quantiles"]["p25"] == pytest.approx(np.quantile(ok["score"], 0.25))
    assert s["below_threshold"] == pytest.approx((ok["score"] < threshold).mean())
    assert data["previous_scores"]["below_threshold"] == pytest.approx(
        (ok1["score"] < threshold).mean())
    assert g["mean_shift"] == pytest.approx(ok["score"].mean() - ok1["score"].mean())
    assert g["quantile_shift"]["p95"] == pytest.approx(
        np.quantile(ok["score"], 0.95) - np.quantile(ok1["score"], 0.95))
    assert g["psi"] == pytest.approx(psi(ok1["score"].to_numpy(), ok["score"].to_numpy()))
    assert data["unexpected_changes"]["count"] == 0 and data["model_change"] is None
    assert data["previous"] == str(out / "date=2026-11-20")

    # the gallery holds the lowest and highest scores
    lowest = ok.sort_values("score")["score"].to_numpy()[:12]
    assert [f["score"] for f in data["worst"]] == pytest.approx(list(lowest))
    assert data["best"][0]["score"] == pytest.approx(ok["score"].max())
    page = (part2 / report.HTML).read_text()
    images = _page_images(page)
    for data_bytes in images:
        Image.open(io.BytesIO(data_bytes)).load()  # every image in it decodes
    assert len(images) == 1 + 24  # the distribution, 12 worst and 12 best thumbnails
    assert "Model change" not in page and "No image changed score" in page

    # readers of the partition skip the report; it is not a file of the partition
    assert len(pd.read_parquet(part2)) == len(rows)
    assert verify(str(part2), rows=True) == {}

    # a third night with another model: the roll-out section
    score_job.run(cfg(input=lake, model=b, output=out, run_date="2026-11-22", report="true"))
    part3 = out / "date=2026-11-22"
    data3 = json.loads((part3 / report.JSON).read_text())
    both = _ok(read_partition(str(part3))).merge(ok, on="path", suffixes=("", "_before"))
    m = data3["model_change"]
    assert m["pairs"] == len(both) and data3["counts"]["reused"] == 0
    assert m["srcc"] == pytest.approx(stats.spearmanr(both["score_before"], both["score"])[0])
    change = (both["score"] - both["score_before"]).abs().sort_values(ascending=False)
    assert [abs(r["change"]) for r in m["largest_movers"]] == pytest.approx(
        list(change.to_numpy()[:12]))
    assert data3["unexpected_changes"]["count"] == 0  # another pipeline: expected to move
    page3 = (part3 / report.HTML).read_text()
    assert "Model change" in page3 and len(_page_images(page3)) == 2 + 24

    # on demand: the latest night by default, or a date; same figures
    assert cli_main(["report", f"output={out}", "date=2026-11-21",
                     f"threshold={threshold}"]) == 0
    again = json.loads((part2 / report.JSON).read_text())
    assert again["counts"] == data["counts"] and again["drift"] == data["drift"]
    assert report.partition_of(str(out), None) == str(part3)
    assert cli_main(["report", f"output={out}", "date=2026-01-01"]) == 2  # not a night


def test_a_report_that_fails_leaves_the_night_committed(tmp_path, models, ray_local,  # noqa: F811
                                                        monkeypatch, caplog):
    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=6, n_png=0, zoo=False)

    def broken(*args, **kwargs):
        raise OSError("store unavailable")

    monkeypatch.setattr(report, "write_report", broken)
    summary = score_job.run(cfg(input=lake, model=models[0], output=tmp_path / "s",
                                run_date="2026-11-20", report="true"))
    part = tmp_path / "s" / "date=2026-11-20"
    assert summary["rows"] == 6 and (part / "_SUCCESS").exists()
    assert not (part / report.JSON).exists()
    assert "report could not be written (OSError: store unavailable)" in caplog.text


def test_score_summary_is_exact_then_sampled():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 0.5, 50_000)
    exact = ScoreSummary(threshold=3.0)
    sampled = ScoreSummary(threshold=3.0, cap=5_000)
    for chunk in np.array_split(x, 17):
        exact.add(chunk)
        sampled.add(np.append(chunk, np.nan))  # a failed row's score is no score
    e, s = exact.figures(), sampled.figures()
    assert e["count"] == s["count"] == 50_000 and not e["sampled"] and s["sampled"]
    assert e["quantiles"]["p50"] == pytest.approx(np.median(x))
    assert s["mean"] == pytest.approx(x.mean()) and s["below_threshold"] == e["below_threshold"]
    assert abs(s["quantiles"]["p95"] - np.quantile(x, 0.95)) < 0.05  # a 5,000 sample
    assert len(sampled.sample) == 5_000 and set(sampled.sample) <= set(x)


def test_psi_reads_as_usual():
    rng = np.random.default_rng(1)
    before = rng.normal(0, 1, 20_000)
    assert psi(before, rng.normal(0, 1, 20_000)) < 0.01
    assert 0.1 < psi(before, rng.normal(0.5, 1, 20_000)) < 0.4
    assert psi(before, rng.normal(2, 1, 20_000)) > 1
    # by hand: 10 equal bins expected, all of actual in the top one
    by_hand = 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1) + (1 - 0.1) * np.log(1 / 0.1)
    assert psi(np.arange(1000.0), np.full(50, 999.0)) == pytest.approx(by_hand)


def test_extremes_and_samples_do_not_depend_on_order():
    scores = [3.0, 1.0, 2.0, 1.0, 5.0, 4.0, float("nan")]
    paths = ["a", "b", "c", "d", "e", "f", "g"]
    forward, backward = Extremes(3), Extremes(3)
    forward.add(scores, paths)
    backward.add(scores[::-1], paths[::-1])
    assert forward.lowest() == backward.lowest() == [("d", 1.0), ("b", 1.0), ("c", 2.0)]
    assert forward.highest() == backward.highest() == [("e", 5.0), ("f", 4.0), ("a", 3.0)]
    pairs = UniformSample(width=2, cap=10)
    pairs.add(np.zeros((0, 2)))
    pairs.add(np.arange(40.0).reshape(20, 2))
    assert pairs.count == 20 and pairs.rows.shape == (10, 2) and not pairs.exact
    assert (pairs.rows[:, 1] - pairs.rows[:, 0] == 1).all()  # rows kept whole


def test_a_face_row_is_named_and_framed_whatever_its_box():
    from jobs.report.figures import _gallery_keys, _named
    from jobs.report.page import _around

    old = pd.DataFrame({"path": ["a"], "score": [1.0], "status": ["ok"]})  # before faces
    new = pd.DataFrame({"path": ["b"], "score": [2.0], "status": ["ok"], "face": [1],
                        "face_box": [np.array([10.0, 20.0, 50.0, 60.0])]})
    keys = _gallery_keys(pd.concat([old, new], ignore_index=True))
    assert keys == [("a", -1, None), ("b", 1, (10.0, 20.0, 50.0, 60.0))]
    assert [_named(*k) for k in keys] == [
        {"path": "a"}, {"path": "b", "face": 1, "face_box": [10.0, 20.0, 50.0, 60.0]}]
    assert _around((10, 20, 50, 60), (100, 100)) == (0, 10, 60, 70)  # a quarter each side
    assert _around((-10, -10, 20, 20), (100, 100)) == (0, 0, 28, 28)  # inside the photo
    for bad in (None, (np.nan,) * 4, (30, 30, 10, 10), (200, 200, 300, 300), (1, 2, 3)):
        assert _around(bad, (100, 100)) is None  # the whole photo instead
