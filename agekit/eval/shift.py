"""Image shifts for a generalisation report: what a photo from elsewhere does to the model (numpy + OpenCV).

Each transform takes a raw RGB uint8 image (H, W, 3), before detection, and returns a new RGB uint8 image
of the same shape; the pipeline (detector, alignment, model) then runs on it as it would on any photo.
They are deterministic: the only random one (sepia's film grain) draws from `seed`.

| name | what it imitates |
| --- | --- |
| grayscale | a black-and-white photo (luma, 3 equal channels) |
| sepia | an old print: sepia toning, faded contrast, darkened corners, film grain |
| jpeg20 | a heavily compressed upload (JPEG quality 20) |
| face32 | a distant face / low-resolution camera: the face shrunk to 32 px wide and blown up again |
| blur | an out-of-focus or shaken shot: Gaussian blur, sigma 2 px per 200 px of the shorter side |
| underexposed | 1.3 stops too dark: x0.4 in linear light (gamma 2.2) |
| warm_cast | tungsten light without white balance: red x1.25, blue x0.75 |

face32 choice: the whole image is shrunk by 32 / (the face's box width in the clean run) with area
averaging, then enlarged back to its size bilinearly, so the face carries the detail of a 32-px face while
the detector still sees a photo of the usual size. When the clean run found no face, the image's shorter
side stands in for the face width (dataset photos are mostly face); faces already 32 px or smaller are
left alone.
"""
from __future__ import annotations

import cv2
import numpy as np

# ITU-R BT.601 luma weights (R, G, B): what a black-and-white conversion of an RGB photo usually uses.
LUMA = np.array([0.299, 0.587, 0.114])
# The usual sepia-toning matrix, rows = output R, G, B over input R, G, B.
SEPIA = np.array([[0.393, 0.769, 0.189],
                  [0.349, 0.686, 0.168],
                  [0.272, 0.534, 0.131]])
FADE_BLACK, FADE_SCALE = 30.0, 0.75  # faded print: black lifted to 30, white lowered to 30 + 0.75 * 255
VIGNETTE = 0.25  # brightness loss in the corners
GRAIN_SIGMA = 4.0  # grey levels; luminance grain, the same in each channel
JPEG_QUALITY = 20
FACE_PX = 32
BLUR_SIGMA_PER_200PX = 2.0
GAMMA = 2.2
EXPOSURE = 0.4  # linear-light gain: log2(0.4) = -1.3 stops
WARM_GAINS = np.array([1.25, 1.0, 0.75])  # R, G, B


def _check(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return image


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half to even and clip float pixel values to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def grayscale(image, seed: int = 0, face_width=None) -> np.ndarray:
    """Luma 0.299 R + 0.587 G + 0.114 B in all three channels: (H, W, 3) uint8 -> (H, W, 3) uint8."""
    y = _check(image).astype(np.float64) @ LUMA
    return np.repeat(_to_uint8(y)[..., None], 3, axis=2)


def sepia(image, seed: int = 0, face_width=None) -> np.ndarray:
    """Old print: sepia matrix (clipped), contrast faded to [30, 221], corners darkened by up to 25%
    (1 - 0.25 r^2, r = distance from the centre / distance to a corner), Gaussian grain (sigma 4) from `seed`."""
    image = _check(image)
    h, w = image.shape[:2]
    toned = np.clip(image.astype(np.float64) @ SEPIA.T, 0, 255)
    faded = FADE_BLACK + FADE_SCALE * toned
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / max(cy ** 2 + cx ** 2, 1e-12)
    vignetted = faded * (1.0 - VIGNETTE * r2)[..., None]
    grain = np.random.default_rng(seed).normal(0.0, GRAIN_SIGMA, (h, w, 1))
    return _to_uint8(vignetted + grain)


def jpeg(image, seed: int = 0, face_width=None, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode as JPEG at `quality` with OpenCV and decode again (blocking, ringing, chroma loss)."""

    bgr = np.ascontiguousarray(_check(image)[..., ::-1])
    ok, data = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as JPEG")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def face_downscale(image, seed: int = 0, face_width=None, face_px: int = FACE_PX) -> np.ndarray:
    """Shrink the whole image by face_px / face_width (area averaging), then enlarge it back to (H, W)
    bilinearly. face_width: the face's box width in pixels (None: the shorter image side). No change when
    the face is already face_px wide or less."""

    image = _check(image)
    h, w = image.shape[:2]
    width = float(face_width) if face_width else float(min(h, w))
    factor = face_px / width
    if factor >= 1.0:
        return image.copy()
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur(image, seed: int = 0, face_width=None) -> np.ndarray:
    """Gaussian blur with sigma = 2 px per 200 px of the shorter side (sigma 2 on a 200x200 UTKFace chip),
    so the same share of the face is smeared whatever the photo's size."""

    image = _check(image)
    sigma = BLUR_SIGMA_PER_200PX * min(image.shape[:2]) / 200.0
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def underexposed(image, seed: int = 0, face_width=None) -> np.ndarray:
    """x0.4 exposure in linear light: 255 ((v / 255)^2.2 * 0.4)^(1 / 2.2). For a pure power law that is
    v * 0.4^(1 / 2.2) = v * 0.6594 (255 -> 168, 100 -> 66): the code values shrink, shadows stay shadows."""
    linear = (_check(image).astype(np.float64) / 255.0) ** GAMMA
    return _to_uint8(255.0 * (EXPOSURE * linear) ** (1.0 / GAMMA))


def warm_cast(image, seed: int = 0, face_width=None) -> np.ndarray:
    """Tungsten cast: R x1.25, G x1, B x0.75 on the code values, clipped."""
    return _to_uint8(_check(image).astype(np.float64) * WARM_GAINS)


# name -> (transform, one-line description for reports)
SHIFTS = {
    "grayscale": (grayscale, "black and white (BT.601 luma)"),
    "sepia": (sepia, "old print: sepia, faded, vignette, grain"),
    "jpeg20": (jpeg, f"JPEG quality {JPEG_QUALITY}"),
    "face32": (face_downscale, f"face shrunk to {FACE_PX} px wide and back"),
    "blur": (blur, "Gaussian blur, sigma 2 px at 200 px"),
    "underexposed": (underexposed, "x0.4 exposure in linear light"),
    "warm_cast": (warm_cast, "warm cast: R x1.25, B x0.75"),
}


def apply_shift(name: str, image, seed: int = 0, face_width=None) -> np.ndarray:
    """Apply shift `name` (a key of SHIFTS) to an RGB uint8 (H, W, 3) image; same shape and dtype out."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift '{name}'; known: {', '.join(SHIFTS)}")
    return SHIFTS[name][0](image, seed=seed, face_width=face_width)
