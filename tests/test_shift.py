"""Image shifts (agekit.eval.shift): exact pixel values worked out by hand where the transform is a formula,
shape / dtype / determinism / the intended effect for the rest."""
import numpy as np
import pytest

from agekit.eval import shift as sh


def pixels(*rgb) -> np.ndarray:
    """A (1, N, 3) uint8 image of the given RGB triples."""
    return np.array([list(rgb)], dtype=np.uint8)


def noisy(h=37, w=53, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_grayscale_hand_values():
    # luma 0.299 R + 0.587 G + 0.114 B: 76.245 -> 76, 149.685 -> 150, 29.07 -> 29, 2.99 + 11.74 + 3.42 = 18.15 -> 18
    out = sh.grayscale(pixels((255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [76, 150, 29, 18]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_warm_cast_hand_values():
    # R x1.25, G x1, B x0.75: (100, 100, 100) -> (125, 100, 75); 240 x 1.25 = 300 clips to 255, 3 x 0.75 = 2.25 -> 2;
    # (8, 50, 7) -> (10, 50, 5.25 -> 5)
    out = sh.warm_cast(pixels((100, 100, 100), (240, 10, 3), (8, 50, 7)))
    assert out[0].tolist() == [[125, 100, 75], [255, 10, 2], [10, 50, 5]]


def test_underexposed_hand_values():
    # 255 ((v/255)^2.2 x 0.4)^(1/2.2) = v x 0.4^(1/2.2) = v x 0.659353:
    # 255 -> 168.13 -> 168, 200 -> 131.87 -> 132, 100 -> 65.94 -> 66, 50 -> 32.97 -> 33, 0 -> 0
    out = sh.underexposed(pixels((255, 200, 100), (50, 0, 255)))
    assert out[0].tolist() == [[168, 132, 66], [33, 0, 168]]


def test_sepia_is_warm_faded_vignetted_and_seeded():
    grey = np.full((41, 61, 3), 128, dtype=np.uint8)
    a, b, c = sh.sepia(grey, seed=1), sh.sepia(grey, seed=1), sh.sepia(grey, seed=2)
    assert a.dtype == np.uint8 and a.shape == grey.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # grain comes from the seed only
    mean = a.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] > mean[2]  # sepia: R > G > B on a grey input
    centre, corner = a[18:23, 28:33].mean(), a[:4, :4].mean()
    assert centre - corner > 20  # darkened corners (up to 25%)
    # faded: a black and a white image both end well inside [0, 255]
    assert sh.sepia(np.zeros_like(grey))[20, 30].min() > 15 and sh.sepia(np.full_like(grey, 255))[20, 30].max() < 240


def test_jpeg20_changes_detail_keeps_shape_and_is_deterministic():
    img = noisy()
    a, b = sh.jpeg(img), sh.jpeg(img)
    assert a.dtype == np.uint8 and a.shape == img.shape and np.array_equal(a, b)
    assert np.abs(a.astype(int) - img).mean() > 10  # quality 20 destroys pixel noise
    flat = np.full((32, 32, 3), (180, 120, 90), dtype=np.uint8)
    assert np.abs(sh.jpeg(flat).astype(int) - flat).max() <= 8  # a flat colour survives (coarse DC steps)


def test_face_downscale_removes_detail_finer_than_a_32px_face():
    checker = (np.indices((64, 96)).sum(axis=0) % 2 * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    out = sh.face_downscale(img, face_width=64)  # factor 0.5: one-pixel checks average to grey
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - 127.5).max() <= 2
    assert np.array_equal(out, sh.face_downscale(img, face_width=64))
    assert np.array_equal(sh.face_downscale(img, face_width=32), img)  # already 32 px: untouched
    assert np.array_equal(sh.face_downscale(img, face_width=20), img)
    # without a face width the shorter side (64) stands in for it
    assert np.array_equal(sh.face_downscale(img), out)


def test_blur_spreads_an_impulse_by_image_size():
    img = np.zeros((200, 200, 3), dtype=np.uint8)
    img[100, 100] = 255
    out = sh.blur(img)  # sigma 2 at 200 px: the peak keeps 1 / (2 pi 4) = 4% of its energy
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 5 <= out[100, 100, 0] <= 15 and out[100, 104, 0] > 0 and out[100, 110, 0] == 0
    big = np.zeros((400, 400, 3), dtype=np.uint8)
    big[200, 200] = 255
    assert sh.blur(big)[200, 200, 0] < out[100, 100, 0]  # sigma 4 at 400 px
    flat = np.full((50, 70, 3), 77, dtype=np.uint8)
    assert np.array_equal(sh.blur(flat), flat)


@pytest.mark.parametrize("name", list(sh.SHIFTS))
def test_every_shift_keeps_shape_dtype_and_input(name):
    img = noisy()
    before = img.copy()
    out = sh.apply_shift(name, img, seed=3, face_width=30.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)  # the input is never modified
    assert np.array_equal(out, sh.apply_shift(name, img, seed=3, face_width=30.0))


def test_apply_shift_rejects_unknown_names_and_bad_images():
    with pytest.raises(ValueError, match="unknown shift"):
        sh.apply_shift("polaroid", noisy())
    with pytest.raises(ValueError, match="uint8"):
        sh.grayscale(np.zeros((4, 4), dtype=np.uint8))
