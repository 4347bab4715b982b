"""Command-line inputs: PATH arguments (files, folders, globs, http(s) URLs, - for stdin) and --boxes.

Rules (docs/predict.md):
- a file given by name is read whatever its extension (a non-image then fails as one file); a symbolic link
  given by name is followed.
- a folder is walked recursively for image extensions (HEIC/HEIF included). Hidden entries, non-image files,
  FIFOs and devices, links to folders (never descended, so no loop) and links to files outside the folder are
  skipped, and every skipped entry is counted by reason in the summary line. A subfolder that cannot be read
  becomes an error row.
- a glob (`*`, `?`, `[...]`, `**`) gives its matches as if each were named on the command line; `**` descends
  real folders only, never a symbolic link to one (as bash's globstar and pathlib do), so a link loop cannot
  make it run away; a match that cannot be used (a link loop, a broken link) becomes one error row.
- `http://` and `https://` URLs are downloaded (timeout, size limit) and `-` reads one image from stdin.
- a file reached twice (by two arguments, or by a link) is processed once.
"""
from __future__ import annotations

import errno
import fnmatch
import http.client
import json
import os
import re
import socket
import stat
import sys
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agekit import __version__
from agekit.errors import AgekitError, ImageError
from agekit.io import os_error_reason

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm",
                    ".jfif", ".heic", ".heif", ".hif", ".avif"}
_GLOB_CHARS = re.compile(r"[*?\[]")
URL = re.compile(r"^https?://", re.IGNORECASE)
STDIN = "-"
MAX_DOWNLOAD_BYTES = 50 * 2**20   # a URL or stdin image larger than this is refused
DOWNLOAD_TIMEOUT = 20.0           # seconds without progress (connect, each read)
DOWNLOAD_DEADLINE = 120.0         # seconds for a whole download


@dataclass(slots=True)  # one per input file: 20,000 of them stay small
class Input:
    """One file to process, or an argument that gave none (error set).

    path: the local file (as reached: under a folder argument, or as given); url: an http(s) URL, or "-"
    for stdin (path is then None); root: the folder argument it was found under (mirrored output names);
    real: the file's real path (links resolved)."""

    path: Path | None
    root: Path | None = None
    error: str | None = None
    url: str | None = None
    real: str | None = None

    @property
    def name(self) -> str:
        """The input as results name it."""
        return self.url if self.url is not None else str(self.path)


@dataclass
class Expansion:
    items: list = field(default_factory=list)
    any_folder: bool = False
    skipped_entries: dict = field(default_factory=dict)  # real path -> why a walked folder's entry was skipped

    @property
    def skipped(self) -> Counter:
        """reason -> number of entries skipped in walked folders (each entry counted once)."""
        return Counter(self.skipped_entries.values())

    def __iter__(self):  # (items, any_folder), as expand_inputs used to return
        return iter((self.items, self.any_folder))


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def walk_folder(folder: Path) -> tuple[list[Path], dict, list[Input]]:
    """The image files under a folder argument (sorted), the entries skipped ({real path: reason}), and an
    error entry for every subfolder that could not be read. Links to folders are never descended; links to
    files are taken only when the file lies inside the folder."""
    root_real = os.path.realpath(folder)
    found, skipped, errors = [], {}, []
    seen = set()
    stack = [(str(folder), ())]
    while stack:
        where, rel = stack.pop()
        try:
            st = os.stat(where)
            if (st.st_dev, st.st_ino) in seen:  # a bind mount or similar seen before
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(where) as it:
                entries = list(it)
        except OSError as exc:
            errors.append(Input(Path(where), error=f"{os_error_reason(exc)} (folder not searched)"))
            continue
        here = os.path.realpath(where)
        for e in entries:
            parts = rel + (e.name,)
            key = os.path.join(here, e.name)
            if e.name.startswith("."):
                skipped[key] = "hidden"
                continue
            try:
                if e.is_symlink():
                    try:
                        mode = os.stat(e.path).st_mode
                    except OSError as exc:
                        skipped[key] = "link loop" if exc.errno == errno.ELOOP else "broken link"
                        continue
                    if stat.S_ISDIR(mode):
                        skipped[key] = "link to a folder"
                        continue
                    if not _inside(os.path.realpath(e.path), root_real):
                        skipped[key] = "link outside the folder"
                        continue
                else:
                    mode = e.stat(follow_symlinks=False).st_mode
            except OSError:
                skipped[key] = "unreadable entry"
                continue
            if stat.S_ISDIR(mode):
                stack.append((e.path, parts))
            elif not stat.S_ISREG(mode):
                skipped[key] = "not a regular file"
            elif os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped[key] = "not an image"
            else:
                found.append((parts, e.path))
    found.sort(key=lambda x: x[0])
    return [Path(p) for _, p in found], skipped, errors


def _join(folder: str, name: str) -> str:
    return name if folder == "" else os.path.join(folder, name)


def _entries(folder: str, hidden: bool = False) -> list:
    try:
        with os.scandir(folder or ".") as it:
            return sorted((e for e in it if hidden or not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def _is_dir(entry, follow: bool = True) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def glob_paths(pattern: str) -> list[str]:
    """The paths a glob matches, sorted (hidden names only when the pattern component starts with '.').
    `**` matches any number of real folders and never descends a link to a folder; other components may go
    through links (bounded by the pattern's depth)."""
    absolute = pattern.startswith(os.sep)
    parts = [p for p in pattern.split(os.sep) if p not in ("", ".")] if pattern else []
    i = 0
    while i < len(parts) and not _GLOB_CHARS.search(parts[i]):
        i += 1
    base = os.path.join(os.sep if absolute else "", *parts[:i]) if (absolute or i) else ""
    out: set = set()
    visited: set = set()

    def match(folder: str, comps: list[str]):
        if not comps:
            out.add(folder)
            return
        c, rest = comps[0], comps[1:]
        if c == "**":
            if rest:
                match(folder, rest)
            elif folder:
                out.add(folder)
            try:
                st = os.stat(folder or ".")
            except OSError:
                return
            if (st.st_dev, st.st_ino, len(comps)) in visited:
                return
            visited.add((st.st_dev, st.st_ino, len(comps)))
            for e in _entries(folder):
                path = _join(folder, e.name)
                if _is_dir(e, follow=False):
                    match(path, comps)
                elif not rest:
                    out.add(path)
        elif _GLOB_CHARS.search(c):
            for e in _entries(folder, hidden=c.startswith(".")):
                if fnmatch.fnmatchcase(e.name, c):
                    if rest:
                        if _is_dir(e):
                            match(_join(folder, e.name), rest)
                    else:
                        out.add(_join(folder, e.name))
        else:
            path = _join(folder, c)
            if rest:
                if os.path.isdir(path):
                    match(path, rest)
            elif os.path.lexists(path):
                out.add(path)

    match(base, parts[i:])
    return sorted(out)


def _classify(path: Path) -> tuple[str, str | None]:
    """("folder" | "file" | "missing" | "error", reason)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            return "error", "broken symbolic link (its target does not exist)"
        return "missing", None
    except NotADirectoryError:
        return "missing", None
    except OSError as exc:
        return "error", os_error_reason(exc)
    return ("folder" if stat.S_ISDIR(st.st_mode) else "file"), None


def expand_inputs(args) -> Expansion:
    """Expand PATH arguments by the rules above: a file is taken as is (whatever its extension: a non-image
    then fails as one file), a folder gives its images recursively, a glob its matches, a URL or - one
    download. A missing path or an empty folder/glob becomes an error entry."""
    result = Expansion()
    out = result.items
    seen, walked = set(), set()

    def add(item: Input):
        if item.error is None:
            key = item.url if item.url is not None else os.path.realpath(item.path)
            item.real = None if item.url is not None else key
            if key in seen:
                return
            seen.add(key)
        out.append(item)

    def add_folder(folder: Path):
        result.any_folder = True
        real = os.path.realpath(folder)
        if real in walked:  # the same folder again (by a link, or a glob matching it twice)
            return
        walked.add(real)
        files, skips, errors = walk_folder(folder)
        result.skipped_entries.update(skips)
        if not files and not errors:
            out.append(Input(folder, error="folder holds no image files"))
        out.extend(errors)
        for f in files:
            add(Input(f, root=folder))

    for arg in map(str, args):
        if arg == STDIN:
            add(Input(None, url=STDIN))
            continue
        if URL.match(arg):
            add(Input(None, url=arg))
            continue
        path = Path(arg).expanduser()
        kind, reason = _classify(path)
        if kind == "folder":
            add_folder(path)
        elif kind == "file":
            add(Input(path))
        elif kind == "missing" and _GLOB_CHARS.search(arg):
            matches = glob_paths(str(path))
            if not matches:
                out.append(Input(path, error="no files match this pattern"))
            result.any_folder = result.any_folder or bool(matches)
            for m in matches:
                mp = Path(m)
                kind, reason = _classify(mp)
                if kind == "folder":
                    add_folder(mp)
                elif kind == "file":
                    add(Input(mp))
                elif kind == "error":
                    out.append(Input(mp, error=reason))
        elif kind == "missing":
            out.append(Input(path, error="file not found"))
        else:
            out.append(Input(path, error=reason))
    return result


# ---- URLs and stdin -------------------------------------------------------------------------------------
def _read_limited(stream, name: str, deadline: float | None = None) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_DOWNLOAD_BYTES:
            raise ImageError(name, f"larger than the {MAX_DOWNLOAD_BYTES // 2**20} MB limit for a download or stdin")
        if deadline is not None and time.monotonic() > deadline:
            raise ImageError(name, f"download took longer than {DOWNLOAD_DEADLINE:.0f} s")
        chunks.append(chunk)


def fetch(item: Input) -> bytes:
    """The bytes of a URL or stdin input; failures raise ImageError with a one-line reason."""
    if item.url == STDIN:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise ImageError(STDIN, "no standard input to read")
        if sys.stdin.isatty():
            raise ImageError(STDIN, "standard input is a terminal: pipe an image into it "
                                    "(agekit predict - < photo.jpg)")
        return _read_limited(stream, STDIN)


    url = item.url
    request = urllib.request.Request(url, headers={"User-Agent": f"agekit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
                raise ImageError(url, f"larger than the {MAX_DOWNLOAD_BYTES // 2**20} MB limit for a download "
                                      f"({int(length):,} bytes)")
            return _read_limited(response, url, time.monotonic() + DOWNLOAD_DEADLINE)
    except urllib.error.HTTPError as exc:
        raise ImageError(url, f"download failed (HTTP {exc.code} {exc.reason})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise ImageError(url, "download timed out") from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise ImageError(url, f"download failed ({text})") from None
    except TimeoutError:
        raise ImageError(url, "download timed out") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImageError(url, f"download failed ({detail})") from None


def url_file_name(url: str) -> str:
    """A safe file name for a URL's image (the last path part, else the host)."""
    if url == STDIN:
        return "stdin"
    parsed = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1]) or parsed.hostname or "download"
    name = unicodedata.normalize("NFC", name)
    name = re.sub(r"[^\w.\-]+", "_", name).strip("._") or "download"
    return name[:120]


_NUMBERS = re.compile(r"^\s*-?[\d.]+(\s*,\s*-?[\d.]+){3}(\s*;\s*-?[\d.]+(\s*,\s*-?[\d.]+){3})*\s*;?\s*$")


def _parse_box(values, where: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise AgekitError(f"--boxes: {where}: a box is 4 numbers x1,y1,x2,y2, got {values!r}") from None
    if len(box) != 4:
        raise AgekitError(f"--boxes: {where}: a box is 4 numbers x1,y1,x2,y2, got {len(box)}")
    return box


class Boxes:
    """--boxes: boxes for every image, or per image (keyed by path or file name).

    Forms: "x1,y1,x2,y2" (several separated by ';'); a JSON file holding a list of boxes (every image) or
    an object {image path or name: [boxes]}; a CSV/text file with rows "x1,y1,x2,y2" (every image) or
    "file,x1,y1,x2,y2" (a header line is allowed).
    """

    def __init__(self, spec: str):
        self.common: list | None = None
        self.by_name: dict[str, list] = {}
        if _NUMBERS.match(spec):
            self.common = [_parse_box(part.split(","), "argument") for part in spec.split(";") if part.strip()]
            return
        path = Path(spec).expanduser()
        if not path.is_file():
            raise AgekitError(f"--boxes: '{spec}' is neither x1,y1,x2,y2 numbers nor a file")
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
            self._from_json(text, path)
        else:
            self._from_rows(text, path)

    def _from_json(self, text, path):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AgekitError(f"--boxes: {path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(doc, list):
            self.common = [_parse_box(b, str(path)) for b in doc]
        elif isinstance(doc, dict):
            for name, boxes in doc.items():
                if boxes and not isinstance(boxes[0], (list, tuple)):
                    boxes = [boxes]
                self.by_name[str(name)] = [_parse_box(b, f"{path}: {name}") for b in boxes]
        else:
            raise AgekitError(f"--boxes: {path}: expected a list of boxes or an object of lists")

    def _from_rows(self, text, path):
        for i, line in enumerate(text.splitlines(), 1):
            cells = [c.strip() for c in line.split(",")]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if len(cells) == 4:
                try:
                    box = tuple(float(c) for c in cells)
                except ValueError:
                    continue  # a header
                self.common = (self.common or []) + [box]
            elif len(cells) == 5:
                try:
                    box = tuple(float(c) for c in cells[1:])
                except ValueError:
                    if i == 1:
                        continue  # a header
                    raise AgekitError(f"--boxes: {path} line {i}: expected file,x1,y1,x2,y2") from None
                self.by_name.setdefault(cells[0], []).append(box)
            else:
                raise AgekitError(f"--boxes: {path} line {i}: expected x1,y1,x2,y2 or file,x1,y1,x2,y2")

    def for_file(self, path: Path):
        """The boxes for this image; None when the file has none (an error for that file)."""
        if self.common is not None:
            return self.common
        for key in (str(path), os.path.realpath(path), path.name):
            if key in self.by_name:
                return self.by_name[key]
        return None

    def for_input(self, item: Input):
        """`for_file` for any input: a URL is looked up by itself and its file name, stdin by "-"."""
        if item.url is None:
            return self.for_file(item.path)
        if self.common is not None:
            return self.common
        for key in (item.url, url_file_name(item.url)):
            if key in self.by_name:
                return self.by_name[key]
        return None
