"""The library's error types: what a user can fix, as opposed to a bug.

A command-line front end prints the message of a :class:`FiqaError` in one line and exits
with status 2; anything else is a bug and keeps its traceback. Each type also derives from
the built-in exception it refines, so ``except ValueError`` / ``except FileNotFoundError``
callers keep working.
"""

from __future__ import annotations


class FiqaError(Exception):
    """Bad settings or input; the message names the input and what to do."""


class ConfigError(FiqaError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class InputError(FiqaError, ValueError):
    """An input (table, checkpoint, image set) cannot be used as given."""


class NotFoundError(FiqaError, FileNotFoundError):
    """An input file, folder, prefix or checkpoint does not exist."""


class OutputBusy(FiqaError):
    """Another live run holds the output's lease (:mod:`fiqa_core.lease`); exit status 3."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it stopped renewing for too long), so it must not
    commit; the CLI reports it with exit status 1, like a job that failed after starting."""
