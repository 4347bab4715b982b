"""Summaries of a read dataset (counts, age histogram, balance) and parallel image decode checks."""
from __future__ import annotations

import multiprocessing
import statistics
import sys
from collections import Counter

from tqdm import tqdm

from agekit.data.readers import RACE_NAMES
from agekit.data.records import FEMALE, MALE, ReadResult
from agekit.errors import ImageError
from agekit.io import load_image

EXAMPLES_SHOWN = 5  # skipped/unreadable entries quoted in a summary
POOL_MIN_IMAGES = 200  # below this a worker pool costs more than it saves
CHUNK_SIZE = 64  # images per task sent to a worker: large enough to amortise the IPC
PROGRESS_MIN_IMAGES = 1000  # show a progress bar only for sets that take a while
BAR_WIDTH = 40


def summarize(result: ReadResult, dataset: str, root) -> dict:
    """Plain-data summary (JSON-ready) of a reader's output."""
    records = result.records
    ages = [r.age for r in records]
    genders = Counter(r.gender for r in records)
    races = Counter(r.race for r in records if r.race is not None)
    subjects = {r.subject for r in records if r.subject is not None}
    return {
        "dataset": dataset,
        "root": str(root),
        "images": len(records),
        "age": _age_stats(ages),
        "age_histogram": decade_histogram(ages),
        "gender": {"male": genders[MALE], "female": genders[FEMALE], "unknown": genders[None]},
        "race": {RACE_NAMES.get(code, str(code)): n for code, n in sorted(races.items())} or None,
        "subjects": len(subjects) or None,
        "with_landmarks": sum(r.landmarks is not None for r in records),
        "skipped": len(result.skipped),
        "skipped_examples": [list(entry) for entry in result.skipped[:EXAMPLES_SHOWN]],
    }


def _age_stats(ages: list[float]):
    if not ages:
        return None
    return {"min": min(ages), "mean": round(statistics.fmean(ages), 2), "median": statistics.median(ages),
            "max": max(ages)}


def decade_histogram(ages: list[float]) -> list[dict]:
    """Counts per decade ('0-9', '10-19', ...) from the youngest to the oldest decade present, gaps included."""
    if not ages:
        return []
    counts = Counter(int(age // 10) for age in ages)
    return [{"bin": f"{d * 10}-{d * 10 + 9}", "count": counts[d]} for d in range(min(counts), max(counts) + 1)]


def format_summary(summary: dict) -> str:
    """The human-readable `agekit data info` report."""
    lines = [f"dataset    {summary['dataset']}  ({summary['root']})",
             f"images     {summary['images']}"]
    age = summary["age"]
    if age:
        lines.append(f"age        min {age['min']:g}  mean {age['mean']:.1f}  median {age['median']:g}  "
                     f"max {age['max']:g}")
        lines += _histogram_lines(summary["age_histogram"])
    gender = summary["gender"]
    labelled = gender["male"] + gender["female"]
    if labelled:
        share = {k: f"{100 * gender[k] / labelled:.1f}%" for k in ("male", "female")}
        lines.append(f"gender     male {gender['male']} ({share['male']})  female {gender['female']} "
                     f"({share['female']})  unknown {gender['unknown']}")
    else:
        lines.append("gender     not labelled")
    if summary["race"]:
        lines.append("race       " + "  ".join(f"{name} {n}" for name, n in summary["race"].items()))
    if summary["subjects"]:
        lines.append(f"subjects   {summary['subjects']}")
    if summary["with_landmarks"]:
        lines.append(f"landmarks  {summary['with_landmarks']} images")
    lines.append(f"skipped    {summary['skipped']}")
    lines += [f"  {entry}: {reason}" for entry, reason in summary["skipped_examples"]]
    if "unreadable" in summary:
        lines.append(f"unreadable {summary['unreadable']}")
        lines += [f"  {entry}: {reason}" for entry, reason in summary["unreadable_examples"]]
    return "\n".join(lines)


def _histogram_lines(histogram: list[dict]) -> list[str]:
    peak = max(b["count"] for b in histogram)
    return [f"  {b['bin']:>7}  {_bar(b['count'], peak):<{BAR_WIDTH}}  {b['count']}" for b in histogram]


def _bar(count: int, peak: int) -> str:
    """Text bar scaled to the largest bin; any non-empty bin gets at least one mark so it stays visible."""
    return "#" * max(round(BAR_WIDTH * count / peak), 1 if count else 0)


def find_unreadable(paths, workers: int = 2) -> list[tuple[str, str]]:
    """(path, reason) for every file that agekit.io.load_image cannot decode, sorted by path.

    Decoding is CPU-bound, so large sets go to a process pool in chunks; a bar shows progress on stderr.
    """
    paths = list(paths)
    bar = tqdm(total=len(paths), desc="decoding", unit="img", file=sys.stderr,
               disable=len(paths) < PROGRESS_MIN_IMAGES)
    bad = []
    with bar:
        for path, reason in _check_all(paths, workers):
            bar.update()
            if reason is not None:
                bad.append((path, reason))
    return sorted(bad)


def _check_all(paths: list[str], workers: int):
    if workers < 2 or len(paths) < POOL_MIN_IMAGES:
        yield from map(check_image, paths)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap_unordered(check_image, paths, chunksize=CHUNK_SIZE)


def check_image(path: str) -> tuple[str, str | None]:
    """(path, None) if the image decodes, else (path, reason). Never raises, so one odd file cannot stop a check."""
    try:
        load_image(path)
    except ImageError as exc:
        return path, exc.reason
    except Exception as exc:  # a decoder bug on one file must not abort the whole check
        return path, f"{type(exc).__name__}: {exc}"
    return path, None
