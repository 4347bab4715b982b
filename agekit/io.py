"""Image reading and atomic file writes shared by every command."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from agekit.errors import ImageError

# One pixel limit, checked from the file's header before anything is decoded (decompression bombs): about
# 15,400 x 11,550. It sits just under the point where Pillow itself refuses to open a file
# (2 x Image.MAX_IMAGE_PIXELS = 178,956,970 by default), so at Pillow's default settings this is the only limit
# that applies; Pillow's DecompressionBombWarning (from 89 M pixels) is not an error here.
MAX_PIXELS = 178_000_000
# Working size of `read_image`: larger photos are decoded reduced (JPEG: 1/2, 1/4, 1/8 DCT scaling while
# decoding) and resized right after decoding to at most this many pixels (about 3,460 x 2,310), which bounds
# the memory a legal huge image costs. Boxes found on the working image are scaled back to the photo's pixels.
WORK_PIXELS = 8_000_000

# HEIF/HEIC (phone photos) start with an ISO-BMFF 'ftyp' box naming one of these brands; AVIF files have the
# same box with 'avif'/'avis' among its brands (Pillow reads those itself when built with AVIF).
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_HEIF: bool | None = None  # pillow-heif registered (True), missing (False), not tried yet (None)


def heif_support() -> bool:
    """Register pillow-heif's HEIF/HEIC opener with Pillow once, when it is installed."""
    global _HEIF
    if _HEIF is None:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _HEIF = True
        except Exception:  # noqa: BLE001 - not installed (ImportError), or a build that does not load
            _HEIF = False
    return _HEIF


def is_heif(head: bytes) -> bool:
    """Whether a file's first bytes are those of a HEIF/HEIC image (not AVIF)."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return False
    brands = head[8:min(len(head), int.from_bytes(head[:4], "big"))]
    brands = {bytes(brands[i:i + 4]) for i in range(0, len(brands) - 3, 4)}
    return bool(brands & HEIF_BRANDS) and not brands & {b"avif", b"avis"}


@dataclass
class LoadedImage:
    """An image as `read_image` gives it: `array` RGB uint8 (h, w, 3), possibly reduced from the photo's
    own `size` (width, height, EXIF-rotated); `scale` = (sx, sy) maps working pixels to photo pixels."""

    array: np.ndarray
    size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)

    @property
    def reduced(self) -> bool:
        return self.scale != (1.0, 1.0)


def os_error_reason(exc: OSError) -> str:
    """A one-line reason for an OSError met reading a file."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, NotADirectoryError):
        return "file not found (a part of the path is not a folder)"
    return f"cannot read the file ({exc.strerror or type(exc).__name__})"


def _open_source(source, name):
    """A binary file object for a path (checked: a regular, non-empty file) or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, "empty file (0 bytes)")
        return io.BytesIO(source)
    try:
        st = os.stat(source)
    except OSError as exc:
        raise ImageError(name, os_error_reason(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(name, "is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
            stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise ImageError(name, f"not a regular file ({kind}); give - to read an image from stdin")
    if st.st_size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        return open(source, "rb")
    except OSError as exc:
        raise ImageError(name, os_error_reason(exc)) from None


def _too_large(name, width, height, max_pixels):
    return ImageError(name, f"image too large ({width}x{height} = {width * height:,} pixels; limit "
                            f"{max_pixels:,})")


def read_image(source, name=None, max_pixels: int = MAX_PIXELS, work_pixels: int | None = WORK_PIXELS) -> LoadedImage:
    """Read an image (a path, or the bytes of a file) as an RGB uint8 array, EXIF orientation applied.

    The pixel limit is checked from the header before anything is decoded. With `work_pixels`, an image
    larger than that is decoded reduced (JPEG draft mode) and resized to at most `work_pixels` right after
    decoding; `LoadedImage.scale` maps its pixels back to the photo's. HEIF/HEIC needs pillow-heif.
    Grayscale, palette, CMYK, 16-bit and alpha images are converted (alpha is composited on black).
    Raises ImageError naming the file (`name`, default the path) for anything unreadable.
    """
    name = str(source) if name is None else str(name)
    fp = _open_source(source, name)
    try:
        head = fp.read(64)
        fp.seek(0)
        if is_heif(head) and not heif_support():
            raise ImageError(name, "HEIC needs pillow-heif (pip install pillow-heif)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is MAX_PIXELS, below
            with Image.open(fp) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _too_large(name, width, height, max_pixels)
                return _decode(im, work_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires at open, before the check above: when Image.MAX_IMAGE_PIXELS was lowered,
        # or for a header beyond 2 x its default
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)):,} pixels" if found else "over Pillow's Image.MAX_IMAGE_PIXELS"
        raise ImageError(name, f"image too large ({count}; limit {max_pixels:,})") from None
    except UnidentifiedImageError as exc:
        raise ImageError(name, f"not a readable image ({type(exc).__name__})") from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except PermissionError as exc:
        raise ImageError(name, os_error_reason(exc)) from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(name, f"corrupt or truncated image ({msg})") from None
    finally:
        fp.close()


def _decode(im: Image.Image, work_pixels: int | None) -> LoadedImage:
    width, height = im.size
    target = None
    if work_pixels and width * height > work_pixels:
        k = math.sqrt(width * height / work_pixels)
        target = (max(1, int(width / k)), max(1, int(height / k)))
        im.draft(None, (max(1, math.ceil(width / k)), max(1, math.ceil(height / k))))  # JPEG: DCT scaling
    im.load()
    orientation = im.getexif().get(0x0112, 1)
    if target is not None and im.size != target and im.width * im.height > target[0] * target[1]:
        if im.mode == "1":  # Pillow resizes these by nearest neighbour: average grey levels / colours instead
            im = im.convert("L")
        elif im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        im = im.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if orientation in _ORIENTATION:
        im = im.transpose(_ORIENTATION[orientation])
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    array = to_rgb_array(im)
    h, w = array.shape[:2]
    scale = (1.0, 1.0) if (w, h) == (width, height) else (width / w, height / h)
    return LoadedImage(array, (width, height), scale)


def load_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file at full size as an RGB uint8 array (H, W, 3), EXIF orientation applied.

    Grayscale, palette, CMYK, 16-bit and alpha images are converted (alpha is composited on black).
    Raises ImageError naming the file for anything unreadable (see `read_image`, which can also reduce
    large photos to a working size).
    """
    return read_image(path, max_pixels=max_pixels, work_pixels=None).array


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an RGB uint8 array."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    return arr if arr.flags.writeable else arr.copy()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside `path`; on success rename it over `path` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        keep_mode(tmp, path)  # after writing: a read-only original would make the copy read-only too
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def keep_mode(tmp, path) -> None:
    """Give the temporary file that will replace `path` the permissions (and, as root, the owner) of the
    file it replaces; a new file gets 0666 less the umask (mkstemp makes 0600 files)."""
    try:
        st = os.stat(path)
    except OSError:
        os.chmod(tmp, 0o666 & ~_UMASK)
        return
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    if hasattr(os, "geteuid") and os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        with contextlib.suppress(OSError):
            os.chown(tmp, st.st_uid, st.st_gid)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
