"""The `agekit` command. Each subcommand lives in agekit/commands/<module>.py with `register(subparsers)`
adding its parser and setting `func=run`; agekit.commands.COMMANDS maps every command name to its module and
one-line help, so only the module of the command being run is imported (`agekit --version` and `--help`
import none). User errors become one line and exit 2."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from agekit import __version__
from agekit.commands import COMMANDS
from agekit.errors import AgekitError

# Packages that the predict-only install (`pip install agekit`) leaves out -> what installs them.
OPTIONAL_PACKAGES = {
    "torch": "agekit[train]", "torchvision": "agekit[train]", "timm": "agekit[train]",
    "tensorboard": "agekit[train]", "face_recognition_models": "agekit[train]",
    "onnx": "onnx", "scipy": "agekit[eval]", "matplotlib": "agekit[eval]",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. command=None: every command's full parser (imports every command module); a command
    name: that command's full parser, the others as name + one-line help only; "" (no command): only
    names and help."""
    parser = argparse.ArgumentParser(prog="agekit", description="Facial age estimation: train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"agekit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {m for m, _ in COMMANDS.values()} if command is None else {COMMANDS.get(command, ("", ""))[0]}
    registered = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in wanted:
            if module not in registered:
                importlib.import_module(f"agekit.commands.{module}").register(sub)
                registered.add(module)
        elif name not in sub.choices:
            sub.add_parser(name, help=help_text)  # listed by --help; never run (its module is not loaded)
    return parser


def command_name(argv) -> str:
    """The command named in argv: its first word that is not an option ('' when there is none). The
    top-level options (-v, --version, -h) take no value, so this is where argparse finds it too."""
    for word in argv:
        if word == "--":
            break
        if not word.startswith("-"):
            return word
    return ""


def missing_package_message(exc: ModuleNotFoundError, command: str) -> str | None:
    """One line for a package the predict-only install leaves out; None for any other missing module."""
    name = (exc.name or "").split(".")[0]
    if name not in OPTIONAL_PACKAGES:
        return None
    return (f"agekit {command} needs the '{name}' package, which the predict-only install leaves out; install it "
            f'with: python -m pip install "{OPTIONAL_PACKAGES[name]}"')


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_name(argv))
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
    except ModuleNotFoundError as exc:
        message = missing_package_message(exc, args.command)
        if message is None or args.verbose:
            raise
        print(f"agekit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agekit: interrupted", file=sys.stderr)
        return 130
