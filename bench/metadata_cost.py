"""What reading a checkpoint's config and printing ``--help`` cost a fresh process.

    .venv/bin/python bench/metadata_cost.py [--repeats 3] [--code-root DIR [DIR ...]]

A scoring driver reads ``config.json`` before it starts Ray; ``fiqa <command> --help`` is the
first thing a user runs. Each case runs in a fresh interpreter (as a driver or a shell would),
and prints the wall time of the case itself (after interpreter start), the process's peak RSS,
and whether torch was imported. ``--code-root`` measures other checkouts too (e.g. a
worktree of an older commit: ``git worktree add /tmp/before <commit>``) with this machine's
environment, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

PROBE = """
import json, sys, time
t = time.perf_counter()
{body}
seconds = time.perf_counter() - t
# VmHWM, not ru_maxrss: ru_maxrss keeps the forking parent's peak across exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "peak_rss_mb": peak / 1024,
                  "torch_imported": "torch" in sys.modules}}))
"""

READ_CONFIG = (
    "from fiqa_core import read_checkpoint_config\n"
    "c = read_checkpoint_config({path!r})\n"
    "assert c.preset"
)
HELP = (
    "import contextlib, io\n"
    "from jobs import cli\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        cli.main([{command!r}, '--help'])\n"
    "    except SystemExit:\n"
    "        pass"
)
COMMANDS = ("info", "train", "pseudo-label", "score", "self-train", "evaluate", "demo")


def probe(body: str, code_root: str) -> dict:
    env = {**os.environ, "PYTHONPATH": code_root}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True, text=True, env=env, cwd=code_root, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkpoint(folder: str) -> str:
    """A real checkpoint directory, written with the library of this checkout."""
    from fiqa_core import Calibration, create_model, save_checkpoint

    path = os.path.join(folder, "student")
    save_checkpoint(
        create_model("student-edgenext-xxs"), path, calibration=Calibration(5, 1, 0, 1)
    )
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per case; the median is shown")
    here = os.path.abspath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--code-root", nargs="+", default=[here], help="checkouts to measure")
    args = p.parse_args()
    roots = [os.path.abspath(r) for r in args.code_root]
    with tempfile.TemporaryDirectory() as d:
        cases = {"read_checkpoint_config": READ_CONFIG.format(path=checkpoint(d))}
        cases.update({f"fiqa {c} --help": HELP.format(command=c) for c in COMMANDS})
        print(f"python {sys.version.split()[0]}; median of {args.repeats} fresh processes")
        for i, root in enumerate(roots):
            print(f"[{i}] {root}")
        print(f"{'case':<28} {'code':>4} {'seconds':>8} {'peak RSS MB':>12}  torch imported")
        for name, body in cases.items():
            for i, root in enumerate(roots):
                runs = sorted((probe(body, root) for _ in range(args.repeats)),
                              key=lambda r: r["seconds"])
                mid = runs[len(runs) // 2]
                print(f"{name:<28} {i:>4} {mid['seconds']:>8.2f} {mid['peak_rss_mb']:>12.0f}  "
                      f"{mid['torch_imported']}")


if __name__ == "__main__":
    main()
