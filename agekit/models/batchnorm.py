"""Batch-norm statistics for converted weights that stored only BN's folded affine (dlib's, for one)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Give every BatchNorm2d of `model` the statistics of its input on `images` (normalised face chips),
    keeping exactly what the model computes in eval mode.

    Converted dlib weights leave running_mean 0 and running_var 1 (dlib stores only the folded affine), so in
    train mode, where BN normalises with batch statistics, the network computes something else (on UTKFace
    chips: features 10x larger). After calibration each BN's running statistics are those of the data and its
    weight and bias are rescaled to match, so train mode starts close to the pretrained function and the
    running averages stay meaningful. Use a few dozen chips cropped as training will crop them.
    """
    stats: dict[nn.BatchNorm2d, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0].float()
        stats[bn] = (x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(record) for bn in norms]
    training = model.training
    try:
        model.eval()  # every BN sees its input under the unchanged (eval-mode) function
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    for bn, (mean, var) in stats.items():
        # eval BN is y = a * x + c; keep a and c while moving the running statistics to (mean, var)
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        c = bn.bias - a * bn.running_mean
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(a * torch.sqrt(var + bn.eps))
        bn.bias.copy_(c + a * mean)
