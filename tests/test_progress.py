"""fiqa's own progress lines while scoring (injected clocks), and a run's console: fiqa's
lines, not Ray Data's, unless verbose."""

import json
import re
import warnings

from fiqa_core import images
from jobs.score import progress, worker_warnings
from tests import imagegen
from tests.test_score import cfg, checkpoint, make_lake  # noqa: F401  (fixture)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_says_done_of_total_rate_eta_and_failures():
    assert progress.line(250, 3, 1000, 10.0) == (
        "fiqa: scored 250 of 1,000 images (25%), 25 images/s, ETA 30 s, 3 failed so far")
    assert progress.line(1000, 0, 1000, 4.0).endswith("(100%), 250 images/s, 0 failed so far")
    assert "ETA 1 h 06 min" in progress.line(1000, 0, 1_001_000, 4.0)
    assert progress.line(0, 0, None, 0.0) == "fiqa: scored 0 images, 0 images/s, 0 failed so far"


def test_actors_send_counts_at_most_once_a_second_and_the_driver_reads_them():
    sent = []

    class Remote:
        def remote(self, done, failed):
            sent.append((done, failed))

    class Handle:
        add = Remote()

    clock = Clock()
    tally = progress.Tally(Handle(), clock)
    for _ in range(5):  # five batches within a second: nothing sent yet
        tally.add(64, 1)
        clock.now += 0.1
    assert sent == []
    clock.now += 1
    tally.add(64, 0)
    assert sent == [(384, 5)]
    counter = progress.Counter()
    counter.add(*sent[0])
    counter.warned({"UserWarning (a.py:1)": (2, "x")})
    lines, clock = [], Clock()
    reporter = progress.Reporter(counter.read, lambda: 1000, 30, out=lines.append, clock=clock)
    clock.now = 12.0
    assert reporter.report() == lines[0] == (
        "fiqa: scored 384 of 1,000 images (38%), 32 images/s, ETA 19 s, 5 failed so far")
    assert lines[1:] == ["fiqa: warning in the workers (counted at the end): "
                         "UserWarning: x (a.py:1)"]
    counter.warned({"UserWarning (a.py:1)": (1, "x 2"),  # the same kind, another message
                    "RuntimeWarning (b.py:2)": (4, "y")})
    reporter.report()  # only the new kind is shown
    assert lines[3:] == ["fiqa: warning in the workers (counted at the end): "
                         "RuntimeWarning: y (b.py:2)"]
    with reporter:
        pass
    assert lines[4:] == ["fiqa: 7 warnings in the workers, 2 kinds:",
                         "fiqa:   4 x RuntimeWarning: y (b.py:2)",
                         "fiqa:   3 x UserWarning: x (a.py:1)"]
    many = {f"UserWarning: w{i} (c.py:{i})": i + 1 for i in range(12)}
    assert progress.summary(many)[1] == "fiqa:   12 x UserWarning: w11 (c.py:11)"
    assert progress.summary(many)[-1] == "fiqa:   and 2 more kinds (_SUCCESS lists them)"


def test_a_workers_warnings_are_counted_for_the_run_not_printed(capsys):
    sent, waited = [], []

    class Remote:
        def remote(self, counts):
            sent.append(counts)
            return len(sent)

    class Handle:
        warned = Remote()

    import ray

    def batch(rows):
        for i in range(3):
            warnings.warn(f"a repeated one, {i} bytes", stacklevel=1)
        assert len(sent) == 1  # the first of a kind goes at once
        warnings.warn("another", RuntimeWarning, stacklevel=1)
        warnings.filterwarnings("ignore", message="added by an import")  # kept after
        return rows

    before = list(warnings.filters)
    real_get = ray.get
    ray.get = lambda refs, timeout=None: waited.append(list(refs))
    try:
        fn = worker_warnings.forwarding_warnings(batch, Handle())
        assert fn.__name__ == "batch" and fn([1]) == [1]
    finally:
        ray.get = real_get
        added = [f for f in warnings.filters if f not in before]
        warnings.filters[:] = before
    counts = {}
    for part in sent:
        for kind, (n, _) in part.items():
            counts[kind.split(" (")[0]] = counts.get(kind.split(" (")[0], 0) + n
            assert re.fullmatch(r"\w+ \(test_progress\.py:\d+\)", kind), kind
    assert counts == {"UserWarning": 3, "RuntimeWarning": 1}
    assert sent[0][next(iter(sent[0]))] == (1, "a repeated one, 0 bytes")
    assert waited == [[1, 2]]  # the batch waits for the first send too, before it returns
    assert len(added) == 1 and added[0][0] == "ignore"  # not the catch-all; the import's kept
    assert capsys.readouterr().err == ""  # nothing printed by the worker itself


def test_the_console_shows_fiqa_progress_not_ray_datas(tmp_path, checkpoint):  # noqa: F811
    from tests.test_concurrency import start

    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=40, n_png=0, zoo=False)
    photo = imagegen.real_photos()[0][:64, :64]
    for i in range(5):  # real files Pillow warns about, decoded in the workers
        (lake / f"exif_{i}.jpg").write_bytes(imagegen.jpeg_with_corrupt_exif(photo))
    with warnings.catch_warnings(record=True) as per_image:
        warnings.simplefilter("always")
        assert images.decode_image(imagegen.jpeg_with_corrupt_exif(photo)).status == "ok"
    assert per_image and all("Corrupt EXIF" in str(w.message) for w in per_image)
    args = ["score", f"input={lake}", f"model={checkpoint}", "run_date=2026-11-20",
            "buckets=4", "batch_size=8", "report=false", "scorers=1"]
    quiet = start(*args, f"output={tmp_path / 'q'}", "progress_s=0.5")
    text = quiet.communicate(timeout=300)[0]
    assert quiet.returncode == 0, text
    assert "fiqa: scored " in text and "images/s" in text
    assert "Running Dataset" not in text and "Total Progress" not in text
    other = [ln for ln in text.splitlines() if not ln.startswith("fiqa: scored ")]
    assert len(other) < 25, text  # fiqa's own lines and a few of Ray's start-up
    # the workers' warning: once when it appears, once with its count, never per worker
    exif = [ln for ln in text.splitlines() if "Corrupt EXIF" in ln]
    assert len(exif) == 2, text
    assert exif[0].startswith("fiqa: warning in the workers (counted at the end): "
                              "UserWarning: Corrupt EXIF data"), text
    assert exif[1].startswith(f"fiqa:   {5 * len(per_image)} x UserWarning: Corrupt EXIF"), text
    marker = json.loads((tmp_path / "q" / "date=2026-11-20" / "_SUCCESS").read_text())
    assert [n for k, n in marker["warnings"].items() if "Corrupt EXIF" in k] == [
        5 * len(per_image)] and marker["images"] == 45
    loud = start(*args, f"output={tmp_path / 'v'}", "verbose=true")
    text = loud.communicate(timeout=300)[0]
    assert loud.returncode == 0 and "Running Dataset" in text, text
