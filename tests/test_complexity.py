"""Parameter, GMAC and latency counting on tiny models."""
import json

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from agekit.eval import complexity as c  # noqa: E402


def test_count_parameters_linear():
    # weight 10*5 + bias 5 = 55
    model = nn.Linear(10, 5)
    assert c.count_parameters(model) == 55
    model.bias.requires_grad_(False)
    assert c.count_parameters(model, trainable_only=True) == 50
    assert c.count_parameters(model) == 55


def test_gmacs_single_conv_exact():
    # each of the 8x8 outputs of the 8 filters sums 3 channels x 3x3 taps: 3*8*9*64 MACs (bias not counted)
    model = nn.Conv2d(3, 8, 3, padding=1)
    assert c.gmacs(model, 8) == pytest.approx(3 * 8 * 9 * 64 / 1e9, rel=0, abs=1e-15)


def test_gmacs_restores_per_module_training_flags():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.train()
    model[1].eval()  # e.g. a frozen BatchNorm inside a training model
    c.gmacs(model, 8)
    assert model.training and model[0].training and not model[1].training


def test_cpu_latency_positive_and_threads_restored():
    before = torch.get_num_threads()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    median, p90 = c.cpu_latency_ms(model, 16, threads=2, warmup=1, runs=3)
    assert 0 < median <= p90
    assert torch.get_num_threads() == before
    assert model.training  # the caller's mode is left as it was


def test_model_complexity_dict():
    out = c.model_complexity(nn.Conv2d(3, 8, 3, padding=1), 8, warmup=1, runs=3)
    assert out["params"] == out["params_trainable"] == 3 * 8 * 9 + 8
    assert out["gmacs"] == pytest.approx(3 * 8 * 9 * 64 / 1e9)
    assert out["latency_ms_median"] > 0 and out["latency_ms_p90"] >= out["latency_ms_median"]
    assert out["threads"] == 1 and out["torch"] == torch.__version__ and out["cpu"]
    assert json.loads(json.dumps(out)) == out
