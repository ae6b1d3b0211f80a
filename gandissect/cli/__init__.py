"""The ``gandissect`` command line: one module per command, each thin (it checks the options
and calls the library), assembled here.

Every module has ``register(commands)``, which adds its sub-parser and sets ``run``, the
function that does the work. Nothing is imported from torch until a command runs, so
``gandissect --help`` and every command's ``--help`` answer at once.

A user's mistake (a ``gandissect.errors.UserError``) prints one line and exits with status 2;
anything else is a bug and keeps its traceback. ``--debug`` (or ``GANDISSECT_DEBUG=1``) shows
the traceback of a mistake too. A ``gandissect.errors.Caution`` (a result that may mislead)
prints one line, ``gandissect: warning: ...``, once however often it is raised.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from gandissect import __version__
from gandissect.cli import (
    ace,
    app,
    attribute,
    attribution,
    dissect,
    edit,
    evaluate,
    explain_units,
    factors,
    invert,
    layers,
    netdissect,
    netdissect_experiment,
    tcav,
    train,
    unit_relevance,
    unit_stats,
    world,
)
from gandissect.errors import Caution, UserError

__all__ = ["build_parser", "main"]

COMMANDS = (world, layers, unit_stats, train, evaluate, dissect, netdissect, netdissect_experiment,
            attribution, attribute, explain_units, unit_relevance, tcav, factors, ace, edit,
            invert, app)
DEBUG_VARIABLE = "GANDISSECT_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``gandissect [--debug] COMMAND [options]``."""
    parser = argparse.ArgumentParser(
        prog="gandissect",
        description="Dissect and edit image GANs; dissect and explain CNN classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"gandissect {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of every error (also: {DEBUG_VARIABLE}=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in COMMANDS:
        command.register(commands)
    for sub in _subparsers(parser):  # --debug also after the command
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``, at any depth (``train generator``, ``world sample``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += [sub, *_subparsers(sub)]
    return found


@contextmanager
def _cautions_as_lines() -> Iterator[None]:
    """Show each distinct ``Caution`` once, as one line; other warnings keep their format."""
    shown: set[str] = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, Caution):
            default(message, category, filename, lineno, file, line)
        elif str(message) not in shown:
            shown.add(str(message))
            print(f"gandissect: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", Caution)  # repeats are dropped above, by their text
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (0 done, 2 a user's mistake, 1 a bug, 130 stopped)."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        with _cautions_as_lines():
            return int(args.run(args) or 0)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"gandissect: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gandissect: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not a mistake: the traceback is what a report needs
        traceback.print_exc()
        print("gandissect: internal error (a bug, not a mistake in the options): please report "
              "it with the traceback above", file=sys.stderr)
        return 1
