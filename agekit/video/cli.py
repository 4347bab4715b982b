"""`agekit predict` on videos, cameras and streams: per-track summaries, per-frame JSON Lines, annotated video.

Outputs (all written atomically, agekit.runtime.outputs rules: a file is replaced only when the run ends,
also when it ends early, so a truncated video or Ctrl-C keeps the results so far):
- --out / --output: one row per track (table, csv, json, jsonl), after the tracks of each source; a source
  that cannot be opened is an error row, one that stops early (truncated file, dropped stream) keeps its
  tracks and adds an error row.
- --frames-out FILE: one JSON line per analysed frame, written as the frames are done.
- --save-annotated: a video file (by its extension: .mp4, .avi, ...) for one source, else a folder where each
  source's annotated copy is written as NAME.annotated.mp4.
Exit code: 0, 1 when a source failed or stopped early, 2 for usage errors, 130 / 143 when interrupted.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from agekit.errors import AgekitError
from agekit.runtime.cli import Terminated, build_estimator, sigterm_raises
from agekit.runtime.outputs import (
    check_out,
    open_destination,
    table_text,
    writable_folder,
)
from agekit.runtime.workers import parse_workers
from agekit.video.annotated import AnnotatedVideo
from agekit.video.source import (
    VIDEO_EXTENSIONS,
    VideoError,
    is_stream_url,
    is_video_path,
    probe_video,
)
from agekit.video.tracking import TrackRun, _bytetrack

WRITABLE = {".mp4", ".m4v", ".mov", ".avi", ".mkv"}  # what OpenCV's writer makes here (mp4v or MJPG)
SUMMARY_COLUMNS = ["file", "track", "first_s", "last_s", "frames", "frames_used", "age", "std", "lo", "hi",
                   "level", "gender", "gender_prob", "error"]


def video_inputs(args) -> list | None:
    """The sources when this run is about videos (a --camera, stream URLs, files that are videos), else None
    (photos: the photo path). Photos and videos in one run are a usage error."""
    paths = list(args.paths or [])
    sources = [f"camera:{c}" for c in (args.camera or [])]
    videos = [p for p in paths if is_video_path(p) or probe_video(p)]
    if not sources and not videos:
        return None
    if len(videos) != len(paths):
        photos = [p for p in paths if p not in videos]
        raise AgekitError(f"give photos and videos in separate runs ({photos[0]} is not a video)")
    return sources + videos


def _check(args) -> None:
    for flag, value in (("--no-detect", args.no_detect), ("--boxes", args.boxes), ("--resume", args.resume),
                        ("--context-dir", getattr(args, "context_dir", None))):
        if value:
            raise AgekitError(f"{flag} does not apply to videos")
    if parse_workers(getattr(args, "workers", "auto")) not in ("auto", 1):
        raise AgekitError("--workers does not apply to videos (one video is read in order, frame by frame)")
    if args.every < 1 or args.detect_every < 1:
        raise AgekitError("--every and --detect-every must be >= 1")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise AgekitError(f"--max-seconds must be > 0, got {args.max_seconds}")


def _annotated_targets(args, sources) -> list:

    if not args.save_annotated:
        return [None] * len(sources)
    given = Path(args.save_annotated).expanduser()
    if given.suffix.lower() in VIDEO_EXTENSIONS:
        if given.suffix.lower() not in WRITABLE:
            raise AgekitError(f"--save-annotated {args.save_annotated}: agekit writes {', '.join(sorted(WRITABLE))} "
                              "videos")
        if len(sources) > 1:
            raise AgekitError(f"--save-annotated {args.save_annotated}: one file for {len(sources)} videos; "
                              "give a folder")
        if given.is_dir():
            raise AgekitError(f"--save-annotated {args.save_annotated} is a folder")
        writable_folder(given.parent, "--save-annotated", args.save_annotated)
        return [given]
    writable_folder(given, "--save-annotated", args.save_annotated)
    names = []
    for s in sources:
        stem = s.replace(":", "") if s.startswith("camera:") else Path(s.split("?", 1)[0]).stem or "stream"
        names.append(given / f"{stem}.annotated.mp4")
    return names


def _no_overwrite(args, sources, annotated) -> None:
    inputs = {os.path.realpath(s) for s in sources if not s.startswith("camera:") and not is_stream_url(s)}
    if args.frames_out == "-" and args.out in (None, "-"):
        raise AgekitError("--frames-out - and the per-person rows would both go to stdout; give --out FILE")
    outs = [("--out", args.out), ("--frames-out", args.frames_out)] + [("--save-annotated", a) for a in annotated]
    seen = {}
    for flag, value in outs:
        if value in (None, "-"):
            continue
        real = os.path.realpath(Path(value).expanduser())
        if real in inputs:
            raise AgekitError(f"{flag} {value} is an input video: it would be overwritten; give another file")
        if real in seen:
            raise AgekitError(f"{seen[real]} and {flag} name the same file {value}")
        seen[real] = flag


class SummaryWriter:
    """Track rows in the --output format, written as each source is done (the table at the end)."""

    def __init__(self, dest, fmt: str):
        self.dest, self.fmt, self.rows, self.count = dest, fmt, [], 0
        if fmt == "csv":
            self._csv([SUMMARY_COLUMNS])
        elif fmt == "json":
            dest.write("[")

    def _csv(self, rows) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self.dest.write(buffer.getvalue())

    def add(self, name: str, summaries, error: str | None) -> None:
        records = [{"file": name, "ok": True, **s.to_dict()} for s in summaries]
        if error:
            records.append({"file": name, "ok": False, "error": error})
        for rec in records:
            if self.fmt == "jsonl":
                self.dest.write(json.dumps(rec) + "\n")
            elif self.fmt == "json":
                body = "\n".join("  " + line for line in json.dumps(rec, indent=2).splitlines())
                self.dest.write(("\n" if self.count == 0 else ",\n") + body)
            else:
                row = self._row(rec)
                if self.fmt == "csv":
                    self._csv([row])
                else:
                    self.rows.append(row)
            self.count += 1
        if self.fmt != "table":
            self.dest.flush()

    @staticmethod
    def _row(rec) -> list[str]:
        def f(v, d=1):
            return "" if v is None else f"{v:.{d}f}"

        if not rec["ok"]:
            return [rec["file"], "", "", "", "", "", "", "", "", "", "", "", "", rec["error"]]
        lo, hi = rec["interval"] or (None, None)
        return [rec["file"], str(rec["track"]), f(rec["first"], 2), f(rec["last"], 2), str(rec["frames"]),
                str(rec["frames_used"]), f(rec["age"]), f(rec["std"]), f(lo), f(hi), f"{rec['level']:g}",
                rec["gender"] or "", f(rec["gender_prob"], 2), ""]

    def end(self) -> None:
        if self.fmt == "json":
            self.dest.write("\n]\n" if self.count else "]\n")
        elif self.fmt == "table":

            header = ["file", "track", "first s", "last s", "frames", "used", "age", "std", "lo", "hi", "level",
                      "gender", "p", "error"]
            rows = [r[:-1] if not r[-1] else [r[0], f"error: {r[-1]}"] for r in self.rows]
            self.dest.write(table_text([header[:-1]] + rows))


def _process(args, estimator, source, annotated_target, frames_dest, bar):
    """Run one source: (track summaries, error or None, the interrupt that stopped it or None). VideoError
    (cannot open) is the caller's."""

    run = TrackRun(estimator, source, max_seconds=args.max_seconds, every=args.every,
                   detect_every=args.detect_every)
    src = run.source
    video = None
    if annotated_target is not None:
        video = AnnotatedVideo(annotated_target, src.fps or 30.0, src.width, src.height)
    bar.reset(total=src.expected_frames)
    bar.set_description(Path(src.name).name if src.kind == "file" else src.name)
    last = stop = None
    try:
        for index, t, frame, result in run.frames():
            if result is not None:
                last = result
                if frames_dest is not None:
                    frames_dest.write(json.dumps({"file": src.name, **result.to_dict()}) + "\n")
            if video is not None:
                video.write(frame, last)
            bar.update()  # tqdm shows the frames per second
    except (KeyboardInterrupt, Terminated) as exc:  # Ctrl-C ends a webcam run: its tracks are still written
        stop = exc
    finally:
        if video is not None:
            video.close(keep=True)
        if frames_dest is not None:
            frames_dest.flush()
    return run.summaries(), run.error, stop


def run_video(args, sources) -> int:


    _check(args)
    annotated = _annotated_targets(args, sources)
    _no_overwrite(args, sources, annotated)
    target = check_out(args.out)
    frames_target = check_out(args.frames_out, "--frames-out") if args.frames_out else None
    estimator = build_estimator(args)

    _bytetrack(30.0, 1.0)  # the `video` extra is there: a usage error before anything is written
    dest = open_destination(target)
    frames_dest = open_destination(frames_target) if frames_target is not None else None
    writer = SummaryWriter(dest, args.output)
    failed, status = 0, 0
    bar = tqdm(unit="frame", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)
    try:
        with sigterm_raises():
            for source, annotated_target in zip(sources, annotated):
                name = f"camera {source.split(':', 1)[1]}" if source.startswith("camera:") else source
                stop = None
                try:
                    summaries, error, stop = _process(args, estimator, source, annotated_target, frames_dest, bar)
                except VideoError as exc:
                    summaries, error = [], str(exc).removeprefix(f"{name}: ")
                writer.add(name, summaries, error)
                if error:
                    failed += 1
                    print(f"agekit: {name}: {error}", file=sys.stderr)
                elif not summaries:  # not an error (an empty scene is one), but an empty table needs a word
                    print(f"agekit: {name}: no face found", file=sys.stderr)
                if stop is not None:
                    raise stop
    except KeyboardInterrupt:
        status = 130
    except Terminated:
        status = 143
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            writer.end()
        for d in (dest, frames_dest):
            if d is not None:
                d.commit()
    if status:
        print("agekit: interrupted; the results so far are written", file=sys.stderr)
        return status
    if len(sources) > 1 or failed:
        print(f"{len(sources)} video{'s' if len(sources) != 1 else ''}, {len(sources) - failed} ok, "
              f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0
