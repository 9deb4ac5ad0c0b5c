"""The ``fiqa`` command: one subcommand per job.

Each subcommand lives in its own module with ``get_args_parser()`` and ``main(args)``;
this file only dispatches, so ``fiqa --help`` stays fast (no torch or Ray import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("jobs.info", "print versions, devices and model presets"),
    "train": ("jobs.train", "train a teacher or student preset with Ray Train"),
    "pseudo-label": ("jobs.pseudo_label", "pseudo-label an image set with a teacher (Ray Data)"),
    "score": ("jobs.score", "score an image lake nightly, incrementally (Ray Data)"),
    "self-train": ("jobs.self_train", "run a whole self-training round, stage by stage"),
    "evaluate": ("jobs.evaluate", "metrics and compute cost of a checkpoint on held-out labels"),
    "demo": ("jobs.demo", "run a whole round on demo data made from bundled photographs"),
}


def settings_parser(
    prog: str, description: str, settings, epilog: str = ""
) -> argparse.ArgumentParser:
    """The parser of a job configured as data: ``--config file.yaml`` then ``key=value``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Settings: " + ", ".join(settings.__dataclass_fields__) + epilog,
    )
    parser.add_argument("--config", help="YAML file of settings")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a setting")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiqa",
        description="Face image quality assessment at image-lake scale, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in SUBCOMMANDS:
        parser.error(f"unknown command {argv[0]!r} (choose from {', '.join(SUBCOMMANDS)})")
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    args = module.get_args_parser().parse_args(argv[1:])
    return module.main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
