"""The ``fiqa`` command: one subcommand per job, all configured the same way.

Each subcommand lives in its own module with ``get_args_parser()`` and ``main(args)``; this
file dispatches and holds what every job shares: the settings parser (``--config file.yaml``
then ``key=value``, each setting also as ``--key value``, every setting listed by ``--help``
with its meaning and default) and the error policy (:func:`run_job`). Nothing here imports
torch or Ray, so ``fiqa <command> --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
import traceback
from collections.abc import Callable

from fiqa_core.config import describe_settings
from fiqa_core.errors import FiqaError, LeaseLost, OutputBusy

# name -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("jobs.info", "print versions, devices and model presets"),
    "train": ("jobs.train", "train a teacher or student preset with Ray Train"),
    "pseudo-label": ("jobs.pseudo_label", "pseudo-label an image set with a teacher (Ray Data)"),
    "score": ("jobs.score", "score an image lake nightly, incrementally (Ray Data)"),
    "faces": ("jobs.faces", "the aligned faces of photographs as crops with their boxes and "
              "landmarks (Ray Data)"),
    "self-train": ("jobs.self_train", "run a whole self-training round, stage by stage"),
    "evaluate": ("jobs.evaluate", "metrics and compute cost of a checkpoint on held-out labels"),
    "export": ("jobs.export", "export a checkpoint to ONNX with preprocessing and calibration "
               "inside"),
    "verify": ("jobs.verify", "check every committed partition of a scoring output against "
               "its _SUCCESS"),
    "report": ("jobs.report", "a committed night at a glance: _report.html and "
               "_report.json beside its _SUCCESS"),
    "demo": ("jobs.demo", "run a whole round on demo data made from bundled photographs"),
}
EXIT_CODES = ("exit status: 0 done, 2 bad settings or input, 3 output busy (another run holds "
              "its lease), 1 the job failed (traceback shown)")


class JobFailed(RuntimeError):
    """A job stopped with an error after it started; the cause is chained (``__cause__``)."""


class _Setting(argparse.Action):
    """``--key value``: recorded as the ``key=value`` override it stands for."""

    def __call__(self, parser, namespace, values, option_string=None):
        value = values if isinstance(values, str) else "true"  # a bare --flag: true
        namespace.flag_overrides = [*(namespace.flag_overrides or []), f"{self.metavar}={value}"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Settings shown as ``name=VALUE`` (their ``--name`` spelling is an alias)."""

    def _format_action_invocation(self, action):
        if isinstance(action, _Setting):
            return f"{action.metavar}=VALUE"
        return super()._format_action_invocation(action)

    def _split_lines(self, text, width):
        # keep preset names and paths whole: no line break after a hyphen
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def settings_parser(
    prog: str, description: str, settings, epilog: str = ""
) -> argparse.ArgumentParser:
    """The parser of a job configured as data: ``--config file.yaml`` then ``key=value``.

    Every field of the ``settings`` dataclass is listed under "settings" with its type,
    default and help (from :func:`fiqa_core.config.setting`), and may also be given as
    ``--key value`` (``--key`` alone for true).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [--config FILE] [KEY=VALUE ...]",
        description=description.replace("``", ""),
        epilog="\n".join(p for p in (epilog, EXIT_CODES + ".") if p),
        allow_abbrev=False,
        formatter_class=_Formatter,
    )
    parser.add_argument("--config", help="YAML file of settings (key=value overrides it)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="a setting, e.g. batch_size=32 (a mapping's entry: teacher.epochs=3)",
    )
    group = parser.add_argument_group("settings (KEY=VALUE, or --KEY VALUE)")
    for name, kind, default, text in describe_settings(settings):
        is_bool = kind.startswith("bool")
        group.add_argument(
            f"--{name}", *([f"--{name.replace('_', '-')}"] if "_" in name else []),
            action=_Setting, metavar=name, nargs=0 if is_bool else None, dest="flag_overrides",
            help=f"{text} [{kind}; {default}]".strip().replace("%", "%%"),
        )
    parser.set_defaults(flag_overrides=[])
    return parser


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``key=value`` overrides, then those given as ``--key value``."""
    return [*getattr(args, "overrides", []), *(getattr(args, "flag_overrides", None) or [])]


def run_job(prog: str, body: Callable[[], object]) -> int:
    """Run a job's body with the CLI's error policy; returns the exit status.

    Bad settings or input (:class:`FiqaError`) print one line and return 2, an output that
    another run holds (:class:`~fiqa_core.errors.OutputBusy`) returns 3; a job that failed
    after starting (:class:`JobFailed`) prints its message and the whole chained cause and
    returns 1; anything else is a bug and propagates with its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        body()
    except OutputBusy as e:
        print(f"{prog}: busy: {e}", flush=True)
        return 3
    except FiqaError as e:
        print(f"{prog}: error: {e}", flush=True)
        return 2
    except JobFailed as e:
        print(f"{prog}: {e}", flush=True)
        if e.__cause__ is not None:
            traceback.print_exception(e.__cause__, file=sys.stderr)
        return 1
    except LeaseLost as e:
        print(f"{prog}: {e}", flush=True)
        return 1
    return 0


def format_cause(error: BaseException) -> str:
    """The whole traceback of ``error`` with its chained causes, as text (for records)."""
    return "".join(traceback.format_exception(error)).rstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiqa",
        description="Face image quality assessment at image-lake scale, on Ray.",
        epilog="Every command takes --config FILE and KEY=VALUE settings; "
        "'fiqa COMMAND --help' lists them. " + EXIT_CODES + ".",
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
    return module.main(parse_args(module.get_args_parser(), argv[1:])) or 0


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """Parse with ``key=value`` and ``--key value`` settings in any order."""
    return parser.parse_intermixed_args(argv)


if __name__ == "__main__":
    sys.exit(main())
