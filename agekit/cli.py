"""The `agekit` command. Each subcommand lives in agekit/commands/<name>.py with `register(subparsers)`
adding its parser and setting `func=run` (found automatically); user errors become one line and exit 2."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from agekit import __version__
from agekit.errors import AgekitError

import agekit.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agekit", description="Facial age estimation: train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"agekit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(m.name for m in pkgutil.iter_modules(agekit.commands.__path__)):
        importlib.import_module(f"agekit.commands.{module}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after flags (argparse stops collecting positionals at the first flag)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AgekitError as exc:
        if args.verbose:
            raise
        print(f"agekit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agekit: interrupted", file=sys.stderr)
        return 130
