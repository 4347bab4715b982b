"""Pictures of an explanation, drawn with OpenCV (no matplotlib: they work in the predict-only install):
heat maps over the aligned face and over the photo, and the face's predicted age distribution as a chart.

All functions take and return RGB uint8 arrays; `png_bytes` encodes one (e.g. for a web page).
"""
from __future__ import annotations

import cv2
import numpy as np

from agekit.explain.geometry import crop_outline, to_photo

FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL_SIDE = 224  # the aligned face and its maps are shown at this size in a panel


def colorize(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """(H, W) values -> (H, W, 3) RGB in the TURBO colour map, 0 -> dark blue, vmax (default: the map's
    maximum) -> dark red."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    top = float(vmax) if vmax else float(values.max())
    scaled = np.clip(values / top, 0, 1) if top > 0 else np.zeros_like(values)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def smooth(values: np.ndarray, grid: int | None) -> np.ndarray:
    """For display: the cell-wise occlusion map blurred by half a cell (sigma), so its blocks read as
    regions; None leaves it as it is."""
    values = np.asarray(values, dtype=np.float32)
    if not grid:
        return values
    return cv2.GaussianBlur(values, (0, 0), values.shape[0] / grid / 2.0)


def heat_overlay(image: np.ndarray, values: np.ndarray, vmax: float | None = None, alpha: float = 0.5,
                 weight: np.ndarray | None = None) -> np.ndarray:
    """The map blended over the image; `weight` (H, W) in [0, 1] scales the blend per pixel (0: image only)."""
    heat = colorize(values, vmax).astype(np.float32)
    a = np.full(values.shape, alpha, np.float32) if weight is None else alpha * np.asarray(weight, np.float32)
    a = a[..., None]
    return (image.astype(np.float32) * (1 - a) + heat * a).round().astype(np.uint8)


def _text(img, text, org, scale=0.45, color=(20, 20, 20), thickness=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), FONT, scale, color, thickness, cv2.LINE_AA)


def distribution_chart(probs, ages, age: float, interval, width: int = 420, height: int = 200,
                       title: str | None = None) -> np.ndarray:
    """The predicted distribution over the integer ages as bars, the interval shaded, the estimate (mean)
    as a line, ages marked every 10 years. RGB uint8 (height, width, 3)."""
    probs = np.asarray(probs, dtype=np.float64)
    ages = np.asarray(ages, dtype=np.float64)
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 14, width - 14, 24, height - 26
    span = max(ages[-1] - ages[0], 1.0)
    x_of = lambda a: left + (a - ages[0]) / span * (right - left)
    peak = float(probs.max()) if probs.size and probs.max() > 0 else 1.0
    y_of = lambda p: bottom - p / peak * (bottom - top)
    lo, hi = interval
    cv2.rectangle(img, (int(x_of(lo)), top), (int(x_of(hi)), bottom), (255, 228, 196), -1)  # interval band
    bar = max(1, int((right - left) / len(ages)) - 1)
    for a, p in zip(ages, probs):
        x = int(x_of(a))
        cv2.rectangle(img, (x - bar // 2, int(y_of(p))), (x + bar - bar // 2, bottom), (70, 110, 200), -1)
    cv2.line(img, (int(x_of(age)), top), (int(x_of(age)), bottom), (200, 30, 30), 2)
    cv2.line(img, (left, bottom), (right, bottom), (0, 0, 0), 1)
    for tick in range(int(np.ceil(ages[0] / 10) * 10), int(ages[-1]) + 1, 10):
        x = int(x_of(tick))
        cv2.line(img, (x, bottom), (x, bottom + 4), (0, 0, 0), 1)
        _text(img, str(tick), (x - 8, bottom + 17), 0.4)
    caption = title or f"age {age:.1f}, interval {lo:.0f}-{hi:.0f} (top bar: p={peak:.2f})"
    _text(img, caption, (left, 16), 0.45)
    return img


def _labelled(img: np.ndarray, label: str) -> np.ndarray:
    """The image with a white strip and a caption above it."""
    strip = np.full((22, img.shape[1], 3), 255, np.uint8)
    _text(strip, label, (4, 15), 0.42)
    return np.vstack([strip, img])


def face_panel(expl, chart: np.ndarray | None = None) -> np.ndarray:
    """One row: the aligned face, its saliency over it, the signed age effect, Grad-CAM (when present) and
    the distribution chart, each captioned."""
    side = PANEL_SIDE
    crop = cv2.resize(expl.crop, (side, side), interpolation=cv2.INTER_CUBIC)
    up = lambda m: cv2.resize(np.asarray(m, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    sal = up(smooth(expl.saliency, expl.grid))
    effect = up(smooth(expl.age_effect, expl.grid))
    bound = float(np.abs(effect).max()) or 1.0
    tiles = [_labelled(crop, "aligned face (model input)"),
             _labelled(heat_overlay(crop, sal), f"occlusion: max {float(expl.saliency.max()):.1f} y"),
             _labelled(heat_overlay(crop, (effect + bound) / 2, vmax=bound, alpha=0.55),
                       f"older(red)/younger(blue) {bound:.1f} y")]
    if expl.gradcam is not None:
        tiles.append(_labelled(heat_overlay(crop, up(expl.gradcam), vmax=1.0), "Grad-CAM (checkpoint)"))
    if chart is None:
        chart = face_chart(expl)
    chart = cv2.resize(chart, (int(chart.shape[1] * side / chart.shape[0]), side), interpolation=cv2.INTER_AREA)
    tiles.append(_labelled(chart, "predicted age distribution"))
    gap = np.full((side + 22, 6, 3), 255, np.uint8)
    row = []
    for t in tiles:
        row += [t, gap]
    return np.hstack(row[:-1])


def face_chart(expl) -> np.ndarray:
    """distribution_chart of an explanation's face (needs the face's probs and the model's ages)."""
    face = expl.face
    ages = expl.ages if expl.ages is not None else np.arange(len(face.probs), dtype=np.float64)
    return distribution_chart(face.probs, ages, face.age, face.interval)


def photo_overlay(image: np.ndarray, explanations, which: str = "saliency", alpha: float = 0.55) -> np.ndarray:
    """The photo with every face's map (each scaled to its own maximum) blended inside its crop window,
    the window outlined and labelled 'age (lo-hi)'."""
    out = image.copy()
    total = np.zeros(image.shape[:2], np.float32)
    weight = np.zeros(image.shape[:2], np.float32)
    for e in explanations:
        values, inside = to_photo(smooth(getattr(e, which), e.grid if which != "gradcam" else None), e.matrix,
                                  e.photo_shape)
        top = float(values.max()) or 1.0
        total = np.maximum(total, values / top)
        weight = np.maximum(weight, inside)
    if explanations:
        out = heat_overlay(out, total, vmax=1.0, alpha=alpha, weight=weight)
    thick = max(1, round(max(image.shape[:2]) / 500))
    for e in explanations:
        corners = crop_outline(e.matrix, e.crop.shape[0]).round().astype(np.int32)
        cv2.polylines(out, [corners], True, (255, 255, 255), thick, cv2.LINE_AA)
        lo, hi = e.face.interval
        x, y = corners.min(axis=0)
        scale = max(0.5, max(image.shape[:2]) / 1000)
        label = f"{e.face.age:.0f} ({lo:.0f}-{hi:.0f})"
        (tw, th), _ = cv2.getTextSize(label, FONT, scale, thick)
        y = max(int(y) - 4, th + 4)
        cv2.rectangle(out, (int(x), y - th - 4), (int(x) + tw + 4, y + 2), (255, 255, 255), -1)
        _text(out, label, (x + 2, y - 2), scale, (0, 0, 0), thick)
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return buf.tobytes()


def layer_grid(fmaps: dict, per_layer: int = 8, tile: int = 72) -> np.ndarray:
    """One row per layer: its `per_layer` most active channels (mean activation), each scaled to its own
    maximum, captioned with the layer's name, shape and channel ids. fmaps: {name: (C, h, w)}."""
    rows = []
    for name, fmap in fmaps.items():
        fmap = np.asarray(fmap, dtype=np.float32)
        order = np.argsort(-fmap.mean(axis=(1, 2)))[:per_layer]
        tiles = []
        for c in order:
            m = np.maximum(fmap[c], 0)
            img = colorize(cv2.resize(m, (tile, tile), interpolation=cv2.INTER_NEAREST))
            tiles.append(_labelled(img, f"ch {c}"))
            tiles.append(np.full((tile + 22, 3, 3), 255, np.uint8))
        row = np.hstack(tiles[:-1])
        rows.append(_labelled(row, f"{name}  {fmap.shape[0]}x{fmap.shape[1]}x{fmap.shape[2]}: most active channels"))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack(rows)
