"""The label interval `step` of the softmax-over-ages methods (DLDL-v2's "number of discrete labels" ablation):
labels a_j = age_min + j * step, targets on that grid, decoder probabilities mapped onto the integer ages with
the mean kept exactly, mean and std taken on the method's own grid. Values worked out by hand."""
import math

import pytest
import torch

from agekit.errors import AgekitError
from agekit.methods import METHODS, create_method
from agekit.methods.base import SoftmaxAgeMethod, label_to_integer_ages

SOFTMAX_METHODS = sorted(n for n, cls in METHODS.items() if issubclass(cls, SoftmaxAgeMethod))


def test_every_softmax_method_takes_a_step():
    assert SOFTMAX_METHODS == ["dex", "dldl", "dldl_v2", "mean_residue", "mean_variance", "soft_labels"]
    for name in SOFTMAX_METHODS:
        for step, k in ((1, 101), (0.5, 201), (2, 51), (4, 26), (5, 21), (10, 11)):
            extra = {"g": max(3.0, step)} if name == "soft_labels" else {}  # g must exceed step / 2
            method = create_method(name, 4, 0, 100, step=step, **extra)
            assert method.num_labels == k and method.fc.out_features == k and len(method.label_ages) == k
            assert method.label_ages[0] == 0 and method.label_ages[-1] == 100


def test_label_grid_and_its_map_onto_integer_ages_by_hand():
    # ages 0..2, step 0.5: labels 0, 0.5, 1, 1.5, 2; a half-integer label gives half its mass to each neighbour
    m = label_to_integer_ages(torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]), 0, 2)
    assert torch.equal(m, torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]]))
    # ages 10..13 and labels 10, 11.25, 13: 11.25 -> 3/4 on 11, 1/4 on 12
    m = label_to_integer_ages(torch.tensor([10.0, 11.25, 13.0]), 10, 13)
    assert torch.equal(m, torch.tensor([[1, 0, 0, 0], [0, 0.75, 0.25, 0], [0, 0, 0, 1.0]]))


def test_decoder_on_a_finer_grid_by_hand():
    method = create_method("dldl_v2", 4, 0, 2, step=0.5)
    p = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])  # over labels 0, 0.5, 1, 1.5, 2
    dist = method.decode(p.log())
    # integer ages: 0 <- 0.1 + 0.2/2 = 0.2; 1 <- 0.2/2 + 0.3 + 0.2/2 = 0.5; 2 <- 0.2/2 + 0.2 = 0.3
    assert torch.allclose(dist.probs, torch.tensor([[0.2, 0.5, 0.3]]))
    # mean on the grid: 0.5*0.2 + 1*0.3 + 1.5*0.2 + 2*0.2 = 1.1 (= 0.5 + 2*0.3 on the integer ages: kept)
    # E[a^2] = 0.25*0.2 + 0.3 + 2.25*0.2 + 4*0.2 = 1.6 -> var 1.6 - 1.21 = 0.39 on the grid
    # (the mapped distribution's own variance would be 0.5 + 1.2 - 1.21 = 0.49: the std is the method's)
    assert dist.mean.item() == pytest.approx(1.1) and dist.std.item() == pytest.approx(math.sqrt(0.39))
    assert (dist.probs @ method.ages).item() == pytest.approx(1.1)


def test_decoder_on_a_coarser_grid_by_hand():
    method = create_method("dldl", 4, 0, 10, step=2.5)  # labels 0, 2.5, 5, 7.5, 10
    dist = method.decode(torch.zeros(1, 5))  # uniform 1/5
    # 2.5 and 7.5 split in halves between 2,3 and 7,8: 0.2 at 0, 5, 10; 0.1 at 2, 3, 7, 8; 0 elsewhere
    expected = torch.tensor([[0.2, 0, 0.1, 0.1, 0, 0.2, 0, 0.1, 0.1, 0, 0.2]])
    assert dist.probs.shape == (1, 11) and torch.allclose(dist.probs, expected)
    # mean 5; var = (25 + 6.25 + 0 + 6.25 + 25) / 5 = 12.5 on the grid
    assert dist.mean.item() == pytest.approx(5.0) and dist.std.item() == pytest.approx(math.sqrt(12.5))


def test_label_index_on_a_coarse_grid():
    method = create_method("dex", 4, 0, 100, step=10)
    ages = torch.tensor([14.0, 15.0, 25.0, 96.0, 120.0, -3.0])
    # 1.4 -> 1; 1.5 and 2.5 round half to even -> 2, 2; 9.6 -> 10; beyond the range -> the end labels
    assert method.label_index(ages).tolist() == [1, 2, 2, 10, 10, 0]


def test_dldl_losses_on_a_coarse_grid_by_hand():
    # labels 0, 5, 10 with sigma 5 are the labels 0, 1, 2 with sigma 1 scaled by 5: the same Gaussian targets
    # (tests/test_methods.py::test_dldl_v2_loss_by_hand): uniform softmax, age 5 -> KL 0.030167, age 0 -> 0.214159
    ages = torch.tensor([5.0, 0.0])
    kl, _ = create_method("dldl", 4, 0, 10, sigma=5.0, step=5).loss(torch.zeros(2, 3), ages)
    assert kl.item() == pytest.approx((0.030167 + 0.214159) / 2, abs=1e-5)
    # DLDL-v2 adds lam * |E - y| with E = 5 (in years): |5 - 5| = 0 and |5 - 0| = 5 -> mean 2.5
    total, parts = create_method("dldl_v2", 4, 0, 10, sigma=5.0, lam=0.5, step=5).loss(torch.zeros(2, 3), ages)
    assert parts["l1"] == pytest.approx(2.5) and parts["kl"] == pytest.approx(kl.item(), abs=1e-6)
    assert total.item() == pytest.approx(kl.item() + 0.5 * 2.5, abs=1e-5)


def test_dex_on_a_grid_of_two_years_by_hand():
    method = create_method("dex", 4, 10, 16, step=2)  # labels 10, 12, 14, 16
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    # age 12.6 -> (12.6 - 10)/2 = 1.3 -> label 1 (12): -ln 0.2; age 15 -> 2.5 -> half to even -> 2 (14): -ln 0.3
    value, _ = method.loss(logits.repeat(2, 1), torch.tensor([12.6, 15.0]))
    assert value.item() == pytest.approx((1.609438 + 1.203973) / 2, abs=1e-5)
    # expectation 10 + 2 * (0.2 + 0.6 + 1.2) = 14, std 2 * 1 = 2; argmax -> the label 16
    dist = method.decode(logits)
    assert dist.mean.item() == pytest.approx(14.0) and dist.std.item() == pytest.approx(2.0)
    assert torch.allclose(dist.probs[0, [0, 2, 4, 6]], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert create_method("dex", 4, 10, 16, step=2, decode="argmax").decode(logits).mean.item() == 16.0


def test_mean_variance_targets_on_a_grid_of_two_years_by_hand():
    method = create_method("mean_variance", 4, 0, 6, step=2)  # labels 0, 2, 4, 6
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    # E = 2 * 2 = 4, Var = 4 * 1 = 4; age 3.2 -> 1.6 -> label 2 (4): CE -ln 0.3, (4 - 3.2)^2 / 2 = 0.32
    value, parts = method.loss(logits, torch.tensor([3.2]))
    assert parts["ce"] == pytest.approx(1.203973, abs=1e-5)
    assert parts["mean"] == pytest.approx(0.32, abs=1e-5) and parts["variance"] == pytest.approx(4.0, abs=1e-5)
    assert value.item() == pytest.approx(1.203973 + 0.2 * 0.32 + 0.05 * 4.0, abs=1e-5)


def test_soft_labels_on_a_grid_of_two_years_by_hand():
    method = create_method("soft_labels", 4, 0, 4, step=2, g=3.0, class_loss="kl")  # labels 0, 2, 4
    # age 2, g 3: weights (3 - 2)/3, 1, (3 - 2)/3 -> t = [1/5, 3/5, 1/5]; uniform p = 1/3, E = 2
    # KL = 2/5 ln(1/5) + 3/5 ln(3/5) + ln 3 = -0.643775 - 0.306495 + 1.098612 = 0.148342; L1 = 0
    value, parts = method.loss(torch.zeros(1, 3), torch.tensor([2.0]))
    assert parts["kl"] == pytest.approx(0.148342, abs=1e-5) and parts["l1"] == pytest.approx(0.0, abs=1e-6)
    assert value.item() == pytest.approx(0.148342, abs=1e-5)
    with pytest.raises(AgekitError, match="half the label step"):
        create_method("soft_labels", 4, 0, 100, step=10, g=3.0)  # an age of 5 would have no label within g


@pytest.mark.parametrize("step", [0, -1, 3, 7.5, "two"])
def test_bad_steps_are_user_errors(step):
    with pytest.raises(AgekitError, match="step"):
        create_method("dldl_v2", 4, 0, 10, step=step)


@pytest.mark.parametrize("name", SOFTMAX_METHODS)
@pytest.mark.parametrize("step", [0.5, 5])
def test_decoder_is_a_distribution_over_integer_ages_with_the_grid_mean(name, step):
    torch.manual_seed(0)
    method = create_method(name, 16, 10, 60, step=step)
    feats = torch.randn(5, 16, requires_grad=True)
    out = method(feats)
    assert out.shape == (5, int(50 / step) + 1)
    loss, _ = method.loss(out, torch.tensor([10.0, 20.5, 33.0, 60.0, 71.0]))
    loss.backward()
    assert torch.isfinite(loss) and feats.grad.abs().sum() > 0
    dist = method.decode(out * 20)  # sharp, too
    assert dist.probs.shape == (5, 51) and (dist.probs >= 0).all()
    assert torch.allclose(dist.probs.sum(1), torch.ones(5), atol=1e-5)
    assert ((dist.mean >= 10) & (dist.mean <= 60)).all()
    if name != "dex":  # the expectation decoders: the integer-age distribution keeps the mean
        assert torch.allclose(dist.probs @ method.ages, dist.mean, atol=1e-3)


@pytest.mark.parametrize("step", [0.5, 5])
def test_dldl_v2_overfits_one_batch_on_another_grid(step):
    torch.manual_seed(0)
    feats = torch.randn(8, 32)
    ages = torch.tensor([3.0, 15.0, 22.0, 30.0, 41.0, 55.0, 68.0, 80.0])
    method = create_method("dldl_v2", 32, 0, 100, step=step)
    opt = torch.optim.Adam(method.parameters(), lr=0.01)
    first = None
    for _ in range(300):
        loss, _ = method.loss(method(feats), ages)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.2
    assert (method.decode(method(feats)).mean - ages).abs().mean().item() < 1.0


def test_default_step_keeps_checkpoints_and_the_head_unchanged():
    method = create_method("dldl_v2", 4, 0, 100)
    assert method.step == 1.0 and method.label_to_ages is None and method.label_ages is method.ages
    assert set(method.state_dict()) == {"fc.weight", "fc.bias"}
    # the grid buffers are not saved either: a checkpoint holds only the head's weights
    assert set(create_method("dldl_v2", 4, 0, 100, step=5).state_dict()) == {"fc.weight", "fc.bias"}
