"""`agekit data info|verify`: look at a dataset folder before training on it."""
from __future__ import annotations

import argparse
import json
import os

from agekit.data.inspect import EXAMPLES_SHOWN, find_unreadable, format_summary, summarize
from agekit.data.readers import detect_dataset, list_datasets
from agekit.data.records import read_dataset


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect and verify datasets",
                                   description="Inspect and verify face-age datasets.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda args: _no_action(parser))

    info = actions.add_parser("info", help="counts, age histogram, gender/race balance")
    _add_common(info)
    info.add_argument("--check-images", action="store_true", help="also decode every image and count unreadable ones")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)

    verify = actions.add_parser("verify", help="decode every image; list bad entries; exit 1 if any")
    _add_common(verify)
    verify.set_defaults(func=run_verify)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="dataset folder (or a .csv/.mat label file)")
    parser.add_argument("--dataset", choices=list_datasets(), help="dataset format (default: detected from the layout)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="decode processes")


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _read(args):
    dataset = args.dataset or detect_dataset(args.path)
    return dataset, read_dataset(dataset, args.path)


def run_info(args) -> int:
    dataset, result = _read(args)
    summary = summarize(result, dataset, os.path.abspath(args.path))
    if args.check_images:
        bad = find_unreadable([r.path for r in result.records], workers=args.workers)
        summary["unreadable"] = len(bad)
        summary["unreadable_examples"] = [list(entry) for entry in bad[:EXAMPLES_SHOWN]]
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def run_verify(args) -> int:
    dataset, result = _read(args)
    bad = find_unreadable([r.path for r in result.records], workers=args.workers)
    for entry, reason in [*result.skipped, *bad]:
        print(f"{entry}: {reason}")
    total = len(result.records) + len(result.skipped)
    print(f"{dataset}: {total} entries, {len(result.records) - len(bad)} good, "
          f"{len(result.skipped)} unparseable, {len(bad)} unreadable")
    return 1 if result.skipped or bad else 0
