"""Command-line inputs: PATH arguments (files, folders, globs) and --boxes."""
from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agekit.errors import AgekitError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm",
                    ".jfif"}
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Input:
    """One file to process, or an argument that gave none (error set)."""

    path: Path
    root: Path | None = None  # the folder argument it was found under (for mirrored output names)
    error: str | None = None


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expand_inputs(args) -> tuple[list[Input], bool]:
    """Expand PATH arguments: a file is taken as is (whatever its extension: a non-image then fails as one
    file), a folder gives its images recursively (by extension, hidden files skipped), a glob its matches.
    A missing path or an empty folder/glob becomes an error entry. Returns (inputs, any_folder)."""
    out: list[Input] = []
    any_folder = False
    seen = set()

    def add(item: Input):
        key = str(item.path.resolve()) if item.error is None else None
        if key is None or key not in seen:
            seen.add(key)
            out.append(item)

    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            any_folder = True
            files = _folder_images(path)
            if not files:
                out.append(Input(path, error="folder holds no image files"))
            for f in files:
                add(Input(f, root=path))
        elif path.exists():
            add(Input(path))
        elif _GLOB_CHARS.search(str(arg)):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                out.append(Input(path, error="no files match this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    any_folder = True
                    for f in _folder_images(mp):
                        add(Input(f, root=mp))
                else:
                    any_folder = True
                    add(Input(mp))
        else:
            out.append(Input(path, error="file not found"))
    return out, any_folder


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
        for key in (str(path), str(path.resolve()), path.name):
            if key in self.by_name:
                return self.by_name[key]
        return None
