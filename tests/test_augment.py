import numpy as np
import torch

from agekit.data.augment import AugmentSpec, augment_batch, brightness_contrast


def _images():
    g = torch.Generator().manual_seed(123)
    return torch.rand(4, 3, 16, 16, generator=g)


def test_brightness_contrast_formula_by_hand():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)  # mean 0.5
    # brightness a = 0.5: (x - 0.5) * 1.5 + 0.5 = [0.05, 0.35, 0.65, 0.95]
    y = brightness_contrast(x, torch.tensor([0.5]), torch.tensor([0.0]))
    assert torch.allclose(y[0, 0].flatten(), torch.tensor([0.05, 0.35, 0.65, 0.95]), atol=1e-6)
    # contrast b = -0.5 around mid-grey: (x - 0.5) * 0.5 + 0.5 = [0.35, 0.45, 0.55, 0.65]
    y = brightness_contrast(x, torch.tensor([0.0]), torch.tensor([-0.5]))
    assert torch.allclose(y[0, 0].flatten(), torch.tensor([0.35, 0.45, 0.55, 0.65]), atol=1e-6)
    # results are clamped to [0, 1]
    y = brightness_contrast(x, torch.tensor([3.0]), torch.tensor([0.0]))
    assert y.min() == 0.0 and y.max() == 1.0


def test_zero_ranges_leave_images_unchanged():
    spec = AugmentSpec(flip=0.0, rotate=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    x = _images()
    y = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert torch.allclose(x, y, atol=1e-5)


def test_flip_only_mirrors():
    spec = AugmentSpec(flip=1.0, rotate=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    x = _images()
    y = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.flip(3), atol=1e-5)


def _ramps():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])
    return torch.stack([base * s for s in (1.0, 0.8, 0.6, 0.4)])


def test_seed_pins_the_output():
    x = _ramps()
    a = augment_batch(x, AugmentSpec(), torch.Generator().manual_seed(7))
    b = augment_batch(x, AugmentSpec(), torch.Generator().manual_seed(7))
    c = augment_batch(x, AugmentSpec(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # Pinned values for seed 7, recorded when the augmentation was written: a change in the order of
    # random draws, the warp or the photometric formulas shows here and must be deliberate.
    assert np.allclose(a.mean(dim=(1, 2, 3)).numpy(), [0.4853, 0.3986, 0.2905, 0.1853], atol=2e-4)
    assert np.allclose(a[:, 0, 8, 8].numpy(), [0.5291, 0.4022, 0.325, 0.1713], atol=2e-4)
