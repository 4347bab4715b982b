"""Image files the tests write: good small JPEGs, broken ones (truncated, empty, text named .jpg) and PNG
headers that claim more pixels than agekit accepts."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(size: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed=seed))
    return path


def write_truncated(path: Path) -> Path:
    """A JPEG cut in half: the header parses, decoding fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(seed=99)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def png_claiming_size(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A PNG whose header declares width x height pixels with almost no data: a decompression bomb's
    signature (agekit refuses it from the header, before decoding). Default 8-bit RGB; bit_depth=1,
    colour_type=0 is a 1-bit grayscale one (1 byte a pixel once decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour_type, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path
