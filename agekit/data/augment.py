"""Training augmentation in one place, shared by all methods, applied to whole batches.

Works on float images (B, 3, H, W) in [0, 1]. Every random draw comes from the caller's torch.Generator,
so a seed fixes the output exactly. An operation whose setting is 0 draws nothing, so adding operations
never changes what an older config produced.

Two families:
- geometric: flip, rotation, scale, shift, and detector jitter (noise on the 5 landmarks the crop was
  aligned with, turned into the similarity warp that noise would have caused), one affine warp per image;
- photo domain, for photos unlike dataset chips (old prints, phones, webcams): grayscale, sepia/faded
  print, colour cast, exposure (gamma and gain), brightness/contrast, blur, sensor noise, low resolution
  and JPEG artefacts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# The 5-point alignment template (agekit.crop.TEMPLATE_112) in grid coordinates [-1, 1]; the
# jitter's warp depends only weakly on where the points sit in the crop, so one layout serves all crops.
_TEMPLATE = (torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                           [70.7299, 92.2041]], dtype=torch.float64) / 56.0 - 1.0)
_EYE_DISTANCE = float(_TEMPLATE[1, 0] - _TEMPLATE[0, 0])
# Sepia toning matrix (rows: output R, G, B), the common photo-editor values.
SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601, what OpenCV's RGB2GRAY uses


@dataclass(frozen=True)
class AugmentSpec:
    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.1  # zoom factor uniform in [1 - scale, 1 + scale]
    shift: float = 0.05  # translation, fraction of the side, uniform in [-shift, shift] per axis
    brightness: float = 0.3  # a ~ U[-brightness, brightness]
    contrast: float = 0.2  # b ~ U[-contrast, contrast]
    # detector jitter: landmark noise, std as a fraction of the distance between the eyes
    landmark_jitter: float = 0.0
    grayscale: float = 0.0  # probability
    sepia: float = 0.0  # probability of a sepia, faded old-print look
    color_cast: float = 0.0  # per-channel gain uniform in [1 - c, 1 + c], then mean-preserving
    gamma: float = 0.0  # exposure: x ** exp(u), u ~ U[-gamma, gamma] (> 0 darkens)
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: float = 1.5  # its sigma, uniform in [0.3, blur_sigma] x (side / 64) pixels
    noise: float = 0.0  # probability of Gaussian sensor noise
    noise_std: float = 0.04  # its std, uniform in [0, noise_std]
    lowres: float = 0.0  # probability of a low-resolution round trip
    lowres_min: float = 0.25  # smallest side it goes down to, as a fraction of the side
    jpeg: float = 0.0  # probability of JPEG compression
    jpeg_quality: int = 15  # lowest quality, uniform in [jpeg_quality, 90]

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, bound: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2.0 - 1.0) * bound


def _chosen(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def similarity_fit(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst.

    src, dst: (B, P, 2). Returns (B, 2, 3). With points as complex numbers z, the fit is
    w = sum(conj(a) b) / sum(|a|^2) on centred points a, b, and t = mean(dst) - w mean(src) (Umeyama 1991).
    """
    a = torch.complex(src[..., 0], src[..., 1])
    b = torch.complex(dst[..., 0], dst[..., 1])
    ma, mb = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
    w = ((a - ma).conj() * (b - mb)).sum(1) / ((a - ma).abs() ** 2).sum(1)
    t = mb.squeeze(1) - w * ma.squeeze(1)
    return torch.stack([torch.stack([w.real, -w.imag, t.real], 1), torch.stack([w.imag, w.real, t.imag], 1)], 1)


def jitter_warp(n: int, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) grid warps equal to re-aligning each face on landmarks moved by N(0, sigma x eye distance).

    A crop aligned on noisy points P + e shows, at output point u, what the clean crop shows at S(u), where
    S is the similarity fitted from the template T to T + e (in crop coordinates): the warp returned.
    """
    noise = torch.randn(n, 5, 2, generator=gen, dtype=torch.float64) * sigma * _EYE_DISTANCE
    template = _TEMPLATE.expand(n, 5, 2)
    return similarity_fit(template, template + noise).float()


def geometric(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Random flip, rotation, scale and shift (and landmark jitter) as one affine warp per image
    (reflection at the borders)."""
    n = x.shape[0]
    angle = _uniform(n, math.radians(spec.rotate), gen, x.device)
    zoom = 1.0 + _uniform(n, spec.scale, gen, x.device)
    tx = _uniform(n, 2.0 * spec.shift, gen, x.device)  # grid coordinates span [-1, 1] = 2 units per side
    ty = _uniform(n, 2.0 * spec.shift, gen, x.device)
    flip = torch.where(torch.rand(n, generator=gen, device=x.device) < spec.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(x.dtype)
    if spec.landmark_jitter:
        jitter = jitter_warp(n, spec.landmark_jitter, gen).to(x.device, x.dtype)
        # the jitter acts on the aligned crop first, then the random view transform: theta . jitter
        last = torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype, device=x.device).expand(n, 1, 3)
        theta = (torch.cat([theta, last], 1) @ torch.cat([jitter, last], 1))[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def brightness_contrast(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The founding documents' photometric jitter, per image.

    brightness: y = (x - mean) * (1 + a) + mean, mean = the image's mean intensity (formula as specified);
    contrast:   y = (y - 0.5) * (1 + b) + 0.5, stretching around mid-grey, so it also moves the mean.
    a, b: (B,). Output clamped to [0, 1].
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) * (1.0 + a.view(-1, 1, 1, 1)) + mean
    y = (y - 0.5) * (1.0 + b.view(-1, 1, 1, 1)) + 0.5
    return y.clamp_(0.0, 1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> the BT.601 luma repeated on 3 channels, as a black-and-white photo gives."""
    luma = (x * LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return luma.expand_as(x).contiguous()


def to_sepia(x: torch.Tensor, fade: torch.Tensor) -> torch.Tensor:
    """Sepia toning, then faded towards a paper tone by `fade` (B,) in [0, 1]: an old colour print."""
    y = torch.einsum("oc,bchw->bohw", SEPIA.to(x), x).clamp(0.0, 1.0)
    paper = torch.tensor([0.85, 0.78, 0.65]).to(x).view(1, 3, 1, 1)
    f = fade.view(-1, 1, 1, 1)
    return y * (1.0 - f) + paper * f


def color_cast(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Per-channel gains (B, 3), divided by their mean so the cast tints without brightening."""
    g = gains / gains.mean(1, keepdim=True)
    return (x * g.view(-1, 3, 1, 1)).clamp(0.0, 1.0)


def exposure(x: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """y = x ** exp(log_gamma) per image: > 0 under-exposes (darker mid-tones), < 0 over-exposes."""
    return x.clamp(0.0, 1.0) ** torch.exp(log_gamma).view(-1, 1, 1, 1)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """One image (3, H, W) blurred by a separable Gaussian of `sigma` pixels (reflected borders)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def low_resolution(image: torch.Tensor, side: int) -> torch.Tensor:
    """One image (3, H, W) reduced to side x side (area average) and enlarged back (bilinear)."""
    h, w = image.shape[-2:]
    small = F.interpolate(image[None], size=(side, side), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One image (3, H, W) in [0, 1] encoded as JPEG at `quality` by OpenCV and decoded again."""
    pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(pixels[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # cannot happen for a valid uint8 array; keep the image rather than fail a training step
        return image
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return torch.from_numpy(back).to(image).permute(2, 0, 1) / 255.0


def photo_domain(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """The photo-domain changes, in the order a photo meets them: optics (resolution, blur), print and
    colour (sepia, grayscale, cast), exposure, sensor noise, then compression last."""
    n, dev = x.shape[0], x.device
    side = x.shape[-1]
    if spec.lowres:
        pick = _chosen(n, spec.lowres, gen, dev)
        sides = (spec.lowres_min + torch.rand(n, generator=gen, device=dev) * (1.0 - spec.lowres_min)) * side
        for i in torch.nonzero(pick).flatten().tolist():
            x[i] = low_resolution(x[i], max(4, int(sides[i])))
    if spec.blur:
        pick = _chosen(n, spec.blur, gen, dev)
        sigmas = (0.3 + torch.rand(n, generator=gen, device=dev) * max(0.0, spec.blur_sigma - 0.3)) * side / 64
        for i in torch.nonzero(pick).flatten().tolist():
            x[i] = gaussian_blur(x[i], float(sigmas[i]))
    if spec.sepia:
        pick = _chosen(n, spec.sepia, gen, dev).view(-1, 1, 1, 1)
        fade = torch.rand(n, generator=gen, device=dev) * 0.4
        x = torch.where(pick, to_sepia(x, fade), x)
    if spec.grayscale:
        pick = _chosen(n, spec.grayscale, gen, dev).view(-1, 1, 1, 1)
        x = torch.where(pick, to_grayscale(x), x)
    if spec.color_cast:
        x = color_cast(x, 1.0 + (torch.rand(n, 3, generator=gen, device=dev) * 2.0 - 1.0) * spec.color_cast)
    if spec.gamma:
        x = exposure(x, _uniform(n, spec.gamma, gen, dev))
    return x


def sensor_and_compression(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    if spec.noise:
        pick = _chosen(n, spec.noise, gen, dev).view(-1, 1, 1, 1)
        std = torch.rand(n, generator=gen, device=dev).view(-1, 1, 1, 1) * spec.noise_std
        x = torch.where(pick, x + torch.randn(x.shape, generator=gen, device=dev) * std, x).clamp(0.0, 1.0)
    if spec.jpeg:
        pick = _chosen(n, spec.jpeg, gen, dev)
        quality = spec.jpeg_quality + torch.rand(n, generator=gen, device=dev) * (90 - spec.jpeg_quality)
        for i in torch.nonzero(pick).flatten().tolist():
            x[i] = jpeg_round_trip(x[i], int(quality[i]))
    return x


def augment_batch(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Geometric, then photo-domain, then brightness/contrast, then noise and JPEG, on a float batch
    (B, 3, H, W) in [0, 1]."""
    x = geometric(x, spec, gen)
    x = photo_domain(x, spec, gen)
    a = _uniform(x.shape[0], spec.brightness, gen, x.device)
    b = _uniform(x.shape[0], spec.contrast, gen, x.device)
    x = brightness_contrast(x, a, b)
    return sensor_and_compression(x, spec, gen)
