
import pytest
import torch

from agekit.errors import AgekitError
from agekit.methods import METHODS, create_method
from agekit.methods.base import distribution_from_point, distribution_from_probs
from agekit.methods.dldl import dldl_v2_loss, gaussian_label_distribution


def test_gaussian_label_distribution_by_hand():
    # ages 0,1,2; true age 1, sigma 1: weights e^-0.5, 1, e^-0.5 normalised by 1 + 2e^-0.5 = 2.213061
    q = gaussian_label_distribution(torch.tensor([1.0]), torch.tensor([0.0, 1.0, 2.0]), 1.0)
    assert torch.allclose(q, torch.tensor([[0.274068, 0.451863, 0.274068]]), atol=1e-6)


def test_dldl_v2_loss_by_hand():
    labels = torch.tensor([0.0, 1.0, 2.0])
    logits = torch.zeros(2, 3)  # p = 1/3 each, expectation 1
    # sample 1 (age 1): q = [e^-0.5, 1, e^-0.5] / 2.213061, ln 2.213061 = 0.794378
    #   sum q ln q = 2 * 0.274068 * (-1.294378) + 0.451862 * (-0.794378) = -1.068445
    #   KL = sum q ln q + ln 3 = -1.068445 + 1.098612 = 0.030167; |E - 1| = 0
    # sample 2 (age 0): q = [1, e^-0.5, e^-2] / 1.741866 = [0.574095, 0.348209, 0.077696], ln 1.741866 = 0.554957
    #   sum q ln q = -(0.574095 * 0.554957 + 0.348209 * 1.054957 + 0.077696 * 2.554957) = -0.884453
    #   KL = -0.884453 + 1.098612 = 0.214159; |E - 0| = 1
    total, kl, l1 = dldl_v2_loss(logits, torch.tensor([1.0, 0.0]), labels, sigma=1.0, lam=0.5)
    assert kl.item() == pytest.approx((0.030167 + 0.214159) / 2, abs=1e-5)
    assert l1.item() == pytest.approx(0.5, abs=1e-6)
    assert total.item() == pytest.approx((0.030167 + 0.214159) / 2 + 0.5 * 0.5, abs=1e-5)


@pytest.mark.parametrize("loss,expected", [("l1", 0.5), ("l2", 0.5), ("smooth_l1", 0.25)])
def test_regression_losses_by_hand(loss, expected):
    method = create_method("regression", 4, 0, 10, loss=loss)
    # errors 1 and 0: L1 mean 0.5; L2 mean (1 + 0)/2; smooth-L1 (beta 1): (0.5 * 1^2 + 0) / 2
    value, _ = method.loss(torch.tensor([2.0, 5.0]), torch.tensor([3.0, 5.0]))
    assert value.item() == pytest.approx(expected)


def test_regression_clamps_targets_to_label_range():
    method = create_method("regression", 4, 0, 10)
    value, _ = method.loss(torch.tensor([10.0]), torch.tensor([15.0]))
    assert value.item() == 0.0


def test_distribution_from_point_keeps_the_point():
    ages = torch.arange(0, 11).float()
    dist = distribution_from_point(torch.tensor([2.25, -3.0, 10.0]), ages)
    assert torch.allclose(dist.probs.sum(1), torch.ones(3))
    assert torch.allclose(dist.probs @ ages, torch.tensor([2.25, 0.0, 10.0]))
    assert dist.probs[0, 2].item() == pytest.approx(0.75) and dist.probs[0, 3].item() == pytest.approx(0.25)


def test_distribution_from_probs_mean_and_std_by_hand():
    # p = [0.5, 0, 0.5] over ages 0,1,2: mean 1, variance 0.5*1 + 0.5*1 = 1
    dist = distribution_from_probs(torch.tensor([[0.5, 0.0, 0.5]]), torch.tensor([0.0, 1.0, 2.0]))
    assert dist.mean.item() == pytest.approx(1.0) and dist.std.item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_forward_backward_and_decoder(name):
    torch.manual_seed(0)
    method = create_method(name, 16, 10, 60)
    feats = torch.randn(5, 16, requires_grad=True)
    out = method(feats)
    loss, parts = method.loss(out, torch.tensor([10.0, 20.5, 33.0, 60.0, 71.0]))
    loss.backward()
    assert torch.isfinite(loss) and parts
    assert feats.grad.abs().sum() > 0
    dist = method.decode(out)
    assert dist.probs.shape == (5, 51)
    assert (dist.probs >= 0).all() and torch.allclose(dist.probs.sum(1), torch.ones(5), atol=1e-5)
    assert ((dist.mean >= 10) & (dist.mean <= 60)).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_overfits_one_batch(name):
    """Loss falls and MAE on the batch gets near zero when the head learns fixed features."""
    torch.manual_seed(0)
    feats = torch.randn(8, 32)
    ages = torch.tensor([3.0, 15.0, 22.0, 30.0, 41.0, 55.0, 68.0, 80.0])
    method = create_method(name, 32, 0, 100)
    opt = torch.optim.Adam(method.parameters(), lr=0.01)
    first = None
    for _ in range(400):
        loss, _ = method.loss(method(feats), ages)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    mae = (method.decode(method(feats)).mean - ages).abs().mean().item()
    assert loss.item() < first * 0.2
    assert mae < 1.0


def test_unknown_method_and_bad_param_are_user_errors():
    with pytest.raises(AgekitError, match="unknown method"):
        create_method("nope", 4, 0, 10)
    with pytest.raises(AgekitError, match="bad parameter"):
        create_method("dldl_v2", 4, 0, 10, sigmaa=2)
    with pytest.raises(AgekitError, match="regression loss"):
        create_method("regression", 4, 0, 10, loss="l3")


def test_methods_are_documented():
    for cls in METHODS.values():
        assert cls.description and cls.paper and cls.__doc__


# The paper each method cites (in `paper`, and in its class or module docstring); every registered method must
# be listed here, so a new one cannot arrive without its citation.
CITED = {"regression": "Niu", "dex": "Rothe", "dldl": "Gao", "dldl_v2": "Gao", "mean_variance": "Pan",
         "mean_residue": "Zhao", "coral": "Cao", "or_cnn": "Niu", "soft_labels": "light age & gender study",
         "drf": "Shen"}


def test_every_method_cites_its_paper_and_gives_its_output_shapes():
    import sys

    assert set(CITED) == set(METHODS)
    for name, cls in METHODS.items():
        docs = (sys.modules[cls.__module__].__doc__ or "") + cls.__doc__
        assert CITED[name] in cls.paper and CITED[name] in docs, name
        assert "outputs:" in cls.__doc__ and "(B" in cls.__doc__, name  # e.g. "outputs: logits (B, K)"


def test_methods_command_lists_every_method_with_description_and_paper(capsys):
    from agekit.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in METHODS.items():
        assert f"{name} " in out and cls.description in out and cls.paper in out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_decoder_stays_a_distribution_for_extreme_outputs(name):
    torch.manual_seed(0)
    method = create_method(name, 16, 10, 60)
    feats = (torch.randn(6, 16) * 1e3).requires_grad_()
    out = method(feats)
    loss, _ = method.loss(out, torch.tensor([10.0, 20.5, 33.0, 60.0, 71.0, 5.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    dist = method.decode(out)
    assert (dist.probs >= 0).all() and torch.allclose(dist.probs.sum(1), torch.ones(6), atol=1e-5)
    assert ((dist.mean >= 10) & (dist.mean <= 60)).all() and torch.isfinite(dist.std).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_gender_head_switches_on_for_every_method(name):
    """Multi-task age + gender: the same AgeModel adds a (B, 2) gender head to any method; the trainer's loss
    L_age + gender.weight * CE(gender) trains both heads and the shared features."""
    import torch.nn.functional as F

    from agekit.models.age_model import AgeModel

    class Flat(torch.nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 4 * 4, 8)

        def forward(self, x):
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    x, ages, genders = torch.rand(4, 3, 4, 4), torch.tensor([12.0, 30.0, 45.0, 70.0]), torch.tensor([0, 1, 1, 0])
    off = AgeModel(Flat(), create_method(name, 8, 0, 100), [0.5] * 3, [0.25] * 3)
    assert set(off(x)) == {"age"} and off.gender_head is None
    model = AgeModel(Flat(), create_method(name, 8, 0, 100), [0.5] * 3, [0.25] * 3, gender=True)
    out = model(x)
    assert set(out) == {"age", "gender"} and out["gender"].shape == (4, 2)
    age_loss, _ = model.method.loss(out["age"], ages)
    gender_loss = F.cross_entropy(out["gender"], genders)
    (age_loss + 0.5 * gender_loss).backward()
    assert model.gender_head.weight.grad.abs().sum() > 0 and model.backbone.fc.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.method.parameters())
    assert model.method.decode(out["age"]).probs.shape == (4, 101)
