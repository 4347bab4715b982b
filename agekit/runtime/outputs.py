"""Where `agekit predict` / `agekit check` write their results (--out), checked before any image is read.

Rules for `--out PATH` (docs/predict.md):
- `-` (or no --out): standard output.
- a character device (/dev/null, a terminal) or a FIFO, and the process's own descriptors (/dev/stdout,
  /dev/stderr, /dev/fd/N): opened for writing and written into as a stream; never replaced, never created.
- a symbolic link: written THROUGH, to the file it points to, by the rules of that file (a regular target is
  replaced atomically, the link stays a link); a link loop is refused.
- a regular file, or a new name: written atomically, a temporary file in the same folder (`.NAME.XXXX.partial`)
  renamed over it when the run ends, keeping the old file's permissions. Missing folders are created.
- a folder, a block device, a socket, a path under a file, a folder that cannot be written: refused (exit 2).
- with --resume (jsonl/csv only): the rows already in the file are kept, the files they name are skipped, and
  new rows are appended to the file itself, flushed after every input file, so even a killed run keeps them.

JSON Lines, CSV and JSON rows are written as each file is done (flushed), so memory stays flat whatever the
batch size; the table needs every row for its column widths and is written at the end. An interrupted run
(Ctrl-C, SIGTERM) writes what it has done and the file is renamed into place, exactly as at a normal end.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agekit.errors import AgekitError
from agekit.io import keep_mode

STREAM_KINDS = ("character device", "FIFO")
_OWN_DESCRIPTORS = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def writable_folder(folder: Path, flag: str, given) -> None:
    """A folder where a file can be created: it exists (or its nearest existing parent, where the missing
    folders will be made, is a folder) and can be written."""
    probe = folder
    while True:
        try:
            st = os.stat(probe)
            break
        except FileNotFoundError:
            if probe.parent == probe:
                raise AgekitError(f"{flag} {given}: no such folder") from None
            probe = probe.parent
        except NotADirectoryError:
            raise AgekitError(f"{flag} {given}: a part of the path is a file, not a folder") from None
        except OSError as exc:
            raise AgekitError(f"{flag} {given}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise AgekitError(f"{flag} {given}: {probe} is a {_kind(st.st_mode)}, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AgekitError(f"{flag} {given}: permission denied (cannot write in {probe})")


@dataclass
class OutTarget:
    """Where --out goes. kind: "stdout"; "stream" (written into, never replaced); "file" (atomic rename).
    path: the file the bytes go to (a symlink's target); given: as the user wrote it."""

    kind: str
    path: Path | None
    given: str
    exists: bool = False

    @property
    def shown(self) -> str:
        return "stdout" if self.kind == "stdout" else self.given


def check_out(spec, flag: str = "--out") -> OutTarget:
    """Classify --out by the rules above, or raise AgekitError (a usage error) saying why not."""
    if spec is None or str(spec) == "-":
        return OutTarget("stdout", None, "-", True)
    given = str(spec)
    path = Path(given).expanduser()
    if str(path) in _OWN_DESCRIPTORS[:2] or str(path).startswith(_OWN_DESCRIPTORS[2:]):
        if not os.path.exists(path):
            raise AgekitError(f"{flag} {given}: no such descriptor")
        return OutTarget("stream", path, given, True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise AgekitError(f"{flag} {given}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise AgekitError(f"{flag} {given}: {exc.strerror or exc}") from None
    real = path
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None  # a dangling link: its target is created
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AgekitError(f"{flag} {given}: symbolic link loop") from None
            raise AgekitError(f"{flag} {given}: {exc.strerror or exc}") from None
        real = Path(os.path.realpath(path))
    if st is None:
        writable_folder(real.parent, flag, given)
        return OutTarget("file", real, given, False)
    kind = _kind(st.st_mode)
    if kind == "folder":
        raise AgekitError(f"{flag} {given} is a folder; give a file name in it")
    if kind in STREAM_KINDS:
        if not os.access(real, os.W_OK):
            raise AgekitError(f"{flag} {given}: permission denied")
        return OutTarget("stream", real, given, True)
    if kind != "file":
        raise AgekitError(f"{flag} {given} is a {kind}: results go only to files, FIFOs and character devices")
    if not os.access(real, os.W_OK):
        raise AgekitError(f"{flag} {given}: permission denied (the file is read-only)")
    writable_folder(real.parent, flag, given)
    return OutTarget("file", real, given, True)


# ---- destinations: where the text goes -----------------------------------------------------------------
class Destination:
    """A text destination, opened after every check passed: write(), flush(), then commit() (done, or
    interrupted with something written) or discard() (nothing to keep: an existing file stays as it was)."""

    fh: io.TextIOBase

    def write(self, text: str) -> None:
        self.fh.write(text)

    def flush(self) -> None:
        self.fh.flush()

    def commit(self) -> None:
        self.fh.flush()

    def discard(self) -> None:
        self.commit()


class StdoutDestination(Destination):
    def __init__(self):
        self.fh = sys.stdout

    def write(self, text: str) -> None:
        try:
            self.fh.write(text)
        except UnicodeEncodeError:  # a file name that is not valid UTF-8, on a strict stdout: escape it
            encoding = getattr(self.fh, "encoding", None) or "utf-8"
            self.fh.write(text.encode(encoding, "backslashreplace").decode(encoding))


class StreamDestination(Destination):
    """A character device or FIFO: opened for writing (append, no create, no truncate), never replaced.
    Opening a FIFO waits for its reader, as a shell redirection does."""

    def __init__(self, target: OutTarget):
        try:
            fd = os.open(target.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOCTTY", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise AgekitError(f"--out {target.given}: {exc.strerror or exc}") from None
        self.fh = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")

    def commit(self) -> None:
        self.fh.close()


class AtomicDestination(Destination):
    """A regular file: written to `.NAME.XXXX.partial` beside it, renamed over it by commit()."""

    def __init__(self, target: OutTarget):
        self.path = target.path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        except OSError as exc:
            raise AgekitError(f"--out {target.given}: {exc.strerror or exc}") from None
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        keep_mode(self.tmp, self.path)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class AppendDestination(Destination):
    """--resume: the file itself, a partial last line (from a killed run) cut off, rows appended."""

    def __init__(self, target: OutTarget, keep_bytes: int | None):
        try:
            target.path.parent.mkdir(parents=True, exist_ok=True)
            if keep_bytes is not None:
                os.truncate(target.path, keep_bytes)
            self.fh = open(target.path, "a", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
        except OSError as exc:
            raise AgekitError(f"--out {target.given}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def open_destination(target: OutTarget, resume: ResumeState | None = None) -> Destination:
    if target.kind == "stdout":
        return StdoutDestination()
    if target.kind == "stream":
        return StreamDestination(target)
    if resume is not None:
        return AppendDestination(target, resume.keep_bytes)
    return AtomicDestination(target)


# ---- --resume: what an earlier run already wrote ----------------------------------------------------------
@dataclass
class ResumeState:
    """Rows already in the --out file: the files they name (`done`), where the complete rows end
    (`keep_bytes`, None when the file ends cleanly) and whether a CSV header is still to be written."""

    done: set = field(default_factory=set)
    done_real: set = field(default_factory=set)
    keep_bytes: int | None = None
    need_header: bool = True
    dropped_partial: bool = False

    def has(self, item) -> bool:
        if item.name in self.done:
            return True
        return item.url is None and item.real is not None and item.real in self.done_real


def _complete_lines(path: Path):
    """(offset, bytes) of every newline-terminated line; the offset after the last complete line."""
    end = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            yield end, line
            end += len(line)


def read_resume(target: OutTarget, fmt: str, header: list[str]) -> ResumeState:
    """Read the --out file of an earlier run (jsonl or csv). A file that is not such a file is a usage
    error; a partial last line (a killed run) is cut off when the file is opened for appending."""
    state = ResumeState()
    if not target.exists:
        return state
    size = os.path.getsize(target.path)
    end = 0
    try:
        if fmt == "jsonl":
            state.need_header = False
            for offset, line in _complete_lines(target.path):
                end = offset + len(line)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.decode("utf-8", "surrogateescape"))
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("file"), str):
                    n = line_number(target.path, offset)
                    raise AgekitError(f"--resume: {target.given} line {n} is not a result row of agekit "
                                      "(--output jsonl); give another --out")
                state.done.add(row["file"])
        else:
            lines = _complete_lines(target.path)
            offsets = []

            def text():
                for offset, line in lines:
                    offsets.append(offset + len(line))
                    yield line.decode("utf-8", "surrogateescape")  # names that are not UTF-8 round-trip

            rows = csv.reader(text())
            first = next(rows, None)
            if first is not None:
                end = offsets[-1]
                if first != header:
                    raise AgekitError(f"--resume: {target.given} has other columns than this command writes "
                                      f"(expected {','.join(header[:4])},...); give another --out")
                state.need_header = False
            for row in rows:
                end = offsets[-1]
                if row and row[0]:
                    state.done.add(row[0])
    except OSError as exc:
        raise AgekitError(f"--resume: {target.given}: {exc.strerror or exc}") from None
    if end != size:
        state.keep_bytes, state.dropped_partial = end, True
    state.done_real = {os.path.realpath(f) for f in state.done if f != "-" and "://" not in f}
    return state


def line_number(path: Path, offset: int) -> int:
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


# ---- formats: rows as they come --------------------------------------------------------------------------
class ResultWriter:
    """Writes each input file's result as soon as it is done (jsonl, csv, json), or keeps the table's rows
    for the end. `add(result)` writes and flushes one file's rows in one go."""

    def __init__(self, dest: Destination, fmt: str, columns, record, write_header: bool = True):
        self.dest, self.fmt, self.columns, self.record = dest, fmt, columns, record
        self.count = 0
        self.table_rows: list[list[str]] = []
        self.header = ["file", "face"] + [h for h, _ in columns] + ["error"]
        if fmt == "csv" and write_header:
            self._csv([self.header])
            self.dest.flush()
        elif fmt == "json":
            self.dest.write("[")

    def _csv(self, rows) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self.dest.write(buffer.getvalue())

    def add(self, r) -> None:
        if self.fmt == "jsonl":
            self.dest.write(json.dumps(self.record(r)) + "\n")
        elif self.fmt == "json":
            body = "\n".join("  " + line for line in json.dumps(self.record(r), indent=2).splitlines())
            self.dest.write(("\n" if self.count == 0 else ",\n") + body)
        elif self.fmt == "csv":
            rows = [] if r.ok else [[r.file, ""] + [""] * len(self.columns) + [r.error]]
            rows += [[r.file, i + 1] + [get(f, e) for _, get in self.columns] + [""]
                     for i, (f, e) in enumerate(zip(r.faces, r.extra))]
            self._csv(rows)
        else:
            if not r.ok:
                self.table_rows.append([r.file, f"error: {r.error}"])
            for i, (f, e) in enumerate(zip(r.faces, r.extra)):
                self.table_rows.append([r.file, str(i + 1)] + [str(get(f, e)) for _, get in self.columns])
        self.count += 1
        if self.fmt != "table":
            self.dest.flush()

    def end(self) -> None:
        if self.fmt == "json":
            self.dest.write("\n]\n" if self.count else "]\n")
        elif self.fmt == "table":
            self.dest.write(table_text([["file", "face"] + [h for h, _ in self.columns]] + self.table_rows))


def table_text(rows: list[list[str]]) -> str:
    widths = [max((len(row[i]) for row in rows if len(row) > i and len(row) > 2), default=0)
              for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if len(row) == 2:  # an error row: file + message
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"
