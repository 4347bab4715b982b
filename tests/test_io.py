"""Image reading: every odd format becomes RGB uint8; every broken file becomes a one-line ImageError."""
import numpy as np
import pytest
from PIL import Image

from agekit.errors import ImageError
from agekit.io import atomic_path, load_image, write_json_atomic

pytestmark = pytest.mark.torchfree


def test_grayscale_cmyk_alpha_16bit_palette(tmp_path):
    Image.new("L", (8, 6), 100).save(tmp_path / "g.png")
    Image.new("CMYK", (8, 6), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    Image.new("RGBA", (8, 6), (200, 100, 50, 0)).save(tmp_path / "a.png")
    Image.fromarray(np.full((6, 8), 65535, np.uint16)).save(tmp_path / "h.png")
    Image.new("P", (8, 6), 3).save(tmp_path / "p.gif")
    gray, cmyk, alpha, deep, pal = (load_image(tmp_path / n) for n in ("g.png", "c.jpg", "a.png", "h.png", "p.gif"))
    for arr in (gray, cmyk, alpha, deep, pal):
        assert arr.shape == (6, 8, 3) and arr.dtype == np.uint8
    assert (gray == 100).all()
    assert cmyk.min() > 240  # CMYK (0,0,0,0) is white
    assert (alpha == 0).all()  # fully transparent pixels are composited on black
    assert (deep == 255).all()  # 16-bit full scale maps to 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (40, 20, 3)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"hello, not an image", "not a readable image"),
])
def test_broken_files(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=reason) as err:
        load_image(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg_and_missing_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "t.jpg")
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused(tmp_path):
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png", max_pixels=10_000)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{") and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
