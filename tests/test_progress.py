"""fiqa's own progress lines while scoring (injected clocks), and a run's console: fiqa's
lines, not Ray Data's, unless verbose."""

from jobs.score import progress
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
    lines, clock = [], Clock()
    reporter = progress.Reporter(counter.read, lambda: 1000, 30, out=lines.append, clock=clock)
    clock.now = 12.0
    assert reporter.report() == lines[0] == (
        "fiqa: scored 384 of 1,000 images (38%), 32 images/s, ETA 19 s, 5 failed so far")


def test_the_console_shows_fiqa_progress_not_ray_datas(tmp_path, checkpoint):  # noqa: F811
    from tests.test_concurrency import start

    lake = tmp_path / "lake"
    make_lake(lake, n_jpeg=40, n_png=0, zoo=False)
    args = ["score", f"input={lake}", f"model={checkpoint}", "run_date=2026-11-20",
            "buckets=4", "batch_size=8", "report=false"]
    quiet = start(*args, f"output={tmp_path / 'q'}", "progress_s=0.5")
    text = quiet.communicate(timeout=300)[0]
    assert quiet.returncode == 0, text
    assert "fiqa: scored " in text and "images/s" in text
    assert "Running Dataset" not in text and "Total Progress" not in text
    other = [ln for ln in text.splitlines() if not ln.startswith("fiqa: scored ")]
    assert len(other) < 25, text  # fiqa's own lines and a few of Ray's start-up
    loud = start(*args, f"output={tmp_path / 'v'}", "verbose=true")
    text = loud.communicate(timeout=300)[0]
    assert loud.returncode == 0 and "Running Dataset" in text, text
