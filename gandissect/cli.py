"""The `gandissect` command line: a thin layer that parses arguments and calls the library.

Each command family lives beside the code it drives and registers its own sub-parser
(`register(subparsers)`), so this file only assembles them.
"""

from __future__ import annotations

import argparse
import json
import sys

from gandissect import __version__


def print_result(result: dict, as_json: bool) -> None:
    """A command's result: one JSON object on stdout, or one ``key value`` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}s}{value}")


class UserError(Exception):
    """Bad input from the user: printed as one clear line, never as a traceback."""


def add_device_argument(parser: argparse.ArgumentParser, what: str = "where the models run"):
    """``--device``: a torch device that exists on this machine (default: cuda when torch sees
    a GPU, else cpu), checked as the arguments are parsed, before any work starts."""

    def device(text: str) -> str:
        import torch

        try:
            parsed = torch.device(text)
        except RuntimeError:
            raise argparse.ArgumentTypeError(
                f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: torch sees no CUDA GPU on this machine; use --device cpu")
        return text

    import torch

    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", type=device, default=default,
                        help=f"{what}: cpu, cuda, cuda:N (default here: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gandissect",
        description="Dissect and edit image GANs; dissect and explain CNN classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"gandissect {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    import gandissect.attribute_commands as attribute_commands
    import gandissect.netdissect_commands as netdissect_commands
    from gandissect import ace_commands, app_commands, dissect_commands, edit_commands, unitstats
    from gandissect.evaluate import commands as eval_commands
    from gandissect.train import commands as train_commands
    from gandissect.world import commands as world_commands

    world_commands.register(commands)
    unitstats.register(commands)
    train_commands.register(commands)
    eval_commands.register(commands)
    dissect_commands.register(commands)
    netdissect_commands.register(commands)
    attribute_commands.register(commands)
    ace_commands.register(commands)
    edit_commands.register(commands)
    app_commands.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"gandissect: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gandissect: interrupted", file=sys.stderr)
        return 130
