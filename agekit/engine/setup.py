"""What a training run is set up with before its first step: seeds, the run folder, parameter groups
(relative steps for tiny pretrained weights), the optimiser, the learning-rate schedule and fine-tuning
initialisation from a checkpoint."""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from agekit.engine.checkpoint import read_checkpoint
from agekit.errors import AgekitError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_for(cfg: dict) -> Path:
    return Path(cfg["run_dir"] or Path("runs") / cfg["name"])


def relative_lr_groups(model, t: dict) -> list[dict]:
    """Parameter groups for fine-tuning a pretrained backbone whose weights are small in magnitude.

    With train.relative_lr = rho, each backbone tensor w gets its own step size rho * mean|w| (a step of
    about rho of its typical size, as LARS/LAMB do per layer: You et al., 2017/2019); a plain step of
    train.lr would overwrite tiny pretrained weights in a few steps. Tensors that are all zero (fresh
    biases) and everything outside the backbone (heads) keep train.lr.
    """
    rho = float(t["relative_lr"])
    groups, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("backbone.", "extra_backbones.")):
            # one group per backbone tensor, decided by name only, so a resumed run has the same groups
            scale = float(p.detach().abs().mean())
            groups.append({"params": [p], "lr": rho * scale if scale > 0 else t["lr"]})
        else:
            plain.append(p)
    # the heads' group last: the trainer logs param_groups[-1]["lr"], i.e. train.lr under the schedule
    return groups + [{"params": plain, "lr": t["lr"]}]


def make_optimizer(params, t: dict):
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                               nesterov=True)
    cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    return cls(params, lr=t["lr"], weight_decay=t["weight_decay"])


def make_scheduler(optimizer, t: dict, steps_per_epoch: int, total_steps: int):
    """Per-step LambdaLR for cosine/step/none (with linear warm-up); ReduceLROnPlateau for plateau."""
    if t["scheduler"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=t["gamma"],
                                                          patience=max(1, t["step_size"] // 5))
    warmup = int(t["warmup_epochs"] * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t["scheduler"] == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if t["scheduler"] == "step":
            return t["gamma"] ** (step // (t["step_size"] * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def init_from_checkpoint(model, path, with_head: bool) -> None:
    """Fine-tuning: copy matching weights (backbone always; age/gender heads when asked and shapes match)."""
    source = read_checkpoint(path)["model"]
    own = model.state_dict()
    taken = {k: v for k, v in source.items()
             if k in own and own[k].shape == v.shape and (with_head or k.startswith(("backbone.", "pixel_")))}
    if not any(k.startswith("backbone.") for k in taken):
        raise AgekitError(f"{path}: no backbone weights match this model (different backbone?)")
    model.load_state_dict(taken, strict=False)
    log.info("fine-tuning from %s: %d of %d tensors taken", path, len(taken), len(own))
