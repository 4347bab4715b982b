"""The method zoo: each loss against values worked out by hand, gradchecks, CORAL's rank consistency vs OR-CNN,
triangular soft labels, and Deep Regression Forests' leaf refits (in-loss, fixed point, trainer epoch end)."""
import math

import pytest
import torch
from torch import nn

from agekit.models.age_model import AgeModel
from agekit.methods import create_method
from agekit.methods.forest import drf_nll, leaf_fixed_point, routing_log_probs
from agekit.methods.mean_variance import mean_variance_loss
from agekit.methods.ordinal import cumulative_to_distribution, ordinal_bce_loss
from agekit.methods.soft_labels import soft_focal_loss, triangular_label_distribution

P4 = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # a distribution over 4 ages used by several hand checks
LOGITS4 = P4.log()  # softmax(log p) = p


# ---- DEX --------------------------------------------------------------------------------------------------
def test_dex_loss_by_hand_rounds_and_shifts_by_age_min():
    method = create_method("dex", 4, 10, 13)  # ages 10..13 -> classes 0..3
    # age 12.6 rounds to 13 (class 3): -ln 0.4 = 0.916291; age 8 clamps to 10 (class 0): -ln 0.1 = 2.302585
    value, parts = method.loss(LOGITS4.repeat(2, 1), torch.tensor([12.6, 8.0]))
    assert value.item() == pytest.approx((0.916291 + 2.302585) / 2, abs=1e-5)
    assert parts["ce"] == pytest.approx(value.item())


def test_dex_expectation_and_argmax_decoders():
    # over ages 10..13: E = 10 + (0*0.1 + 1*0.2 + 2*0.3 + 3*0.4) = 12; Var = 0.1*4 + 0.2*1 + 0 + 0.4*1 = 1
    dist = create_method("dex", 4, 10, 13).decode(LOGITS4)
    assert dist.mean.item() == pytest.approx(12.0) and dist.std.item() == pytest.approx(1.0)
    arg = create_method("dex", 4, 10, 13, decode="argmax").decode(LOGITS4)
    assert arg.mean.item() == 13.0 and arg.std.item() == pytest.approx(1.0)  # std: the softmax's own
    assert torch.allclose(arg.probs, P4)
    with pytest.raises(Exception, match="decode"):
        create_method("dex", 4, 10, 13, decode="median")


# ---- DLDL -------------------------------------------------------------------------------------------------
def test_dldl_loss_by_hand():
    # ages 0,1,2, sigma 1, uniform softmax (logits 0): KL = 0.030167 for age 1 and 0.214159 for age 0
    # (the arithmetic is in tests/test_methods.py::test_dldl_v2_loss_by_hand)
    method = create_method("dldl", 4, 0, 2, sigma=1.0)
    value, parts = method.loss(torch.zeros(2, 3), torch.tensor([1.0, 0.0]))
    assert value.item() == pytest.approx((0.030167 + 0.214159) / 2, abs=1e-5)
    assert set(parts) == {"kl"}


# ---- mean-variance and mean-residue ---------------------------------------------------------------------
def test_mean_variance_loss_by_hand():
    method = create_method("mean_variance", 4, 0, 3)  # lambda1 0.2, lambda2 0.05
    # p = [0.1, 0.2, 0.3, 0.4] for both samples: E = 2, Var = 1
    # age 2: CE -ln 0.3 = 1.203973, (E - 2)^2 / 2 = 0;  age 1: CE -ln 0.2 = 1.609438, (E - 1)^2 / 2 = 0.5
    # L = (1.203973 + 1.609438)/2 + 0.2 * (0 + 0.5)/2 + 0.05 * 1 = 1.406705 + 0.05 + 0.05 = 1.506705
    value, parts = method.loss(LOGITS4.repeat(2, 1), torch.tensor([2.0, 1.0]))
    assert value.item() == pytest.approx(1.506705, abs=1e-5)
    assert parts["ce"] == pytest.approx(1.406705, abs=1e-5)
    assert parts["mean"] == pytest.approx(0.25, abs=1e-6) and parts["variance"] == pytest.approx(1.0, abs=1e-6)


def test_mean_residue_loss_by_hand():
    method = create_method("mean_residue", 4, 0, 3)  # lambda1 0.2, lambda2 0.05, adaptive K
    # age 2: p_true = 0.3, top-K = {0.3, 0.4} (K = 2), residue = -(0.1 ln 0.1 + 0.2 ln 0.2)
    #        = 0.230259 + 0.321888 = 0.552146
    # age 1: p_true = 0.2, top-K = {0.2, 0.3, 0.4} (K = 3), residue = -0.1 ln 0.1 = 0.230259
    # CE and mean loss as in the mean-variance check: 1.406705 and 0.25
    # L = 1.406705 + 0.2 * 0.25 + 0.05 * (0.552146 + 0.230259)/2 = 1.406705 + 0.05 + 0.019560 = 1.476265
    value, parts = method.loss(LOGITS4.repeat(2, 1), torch.tensor([2.0, 1.0]))
    assert value.item() == pytest.approx(1.476265, abs=1e-5)
    assert parts["residue"] == pytest.approx(0.391202, abs=1e-5) and parts["k"] == pytest.approx(2.5)
    # fixed K = 1: only 0.4 kept; residue = 0.552146 - 0.3 ln 0.3 = 0.552146 + 0.361192 = 0.913338 for both
    fixed = create_method("mean_residue", 4, 0, 3, top_k=1)
    _, parts = fixed.loss(LOGITS4.repeat(2, 1), torch.tensor([2.0, 1.0]))
    assert parts["residue"] == pytest.approx(0.913338, abs=1e-5) and parts["k"] == 1.0


def test_mean_residue_is_zero_when_the_true_age_is_the_mode_of_a_one_hot():
    logits = torch.tensor([[-30.0, 30.0, -30.0]])
    _, parts = create_method("mean_residue", 4, 0, 2).loss(logits, torch.tensor([1.0]))
    assert parts["residue"] < 1e-20 and parts["k"] == 1.0


# ---- CORAL and OR-CNN -------------------------------------------------------------------------------------
def test_ordinal_loss_by_hand():
    # ages 0,1,2 -> 2 tasks (y > 0, y > 1); logits [0, ln 1/3] -> P = [0.5, 0.25]
    # age 1: labels [1, 0]: -ln 0.5 - ln 0.75 = 0.693147 + 0.287682 = 0.980829
    # age 2: labels [1, 1]: -ln 0.5 - ln 0.25 = 0.693147 + 1.386294 = 2.079442   -> mean 1.530135
    logits = torch.tensor([[0.0, math.log(1 / 3)]]).repeat(2, 1)
    for name in ("coral", "or_cnn"):
        value, _ = create_method(name, 4, 0, 2).loss(logits, torch.tensor([1.0, 2.0]))
        assert value.item() == pytest.approx(1.530135, abs=1e-5)
    # importance [2, 1], age 1: 2 * 0.693147 + 0.287682 = 1.673976
    value, _ = create_method("coral", 4, 0, 2, importance=[2.0, 1.0]).loss(logits[:1], torch.tensor([1.0]))
    assert value.item() == pytest.approx(1.673976, abs=1e-5)
    with pytest.raises(Exception, match="importance"):
        create_method("coral", 4, 0, 2, importance=[1.0])


def test_ordinal_decoder_by_hand_and_clipping():
    ages = torch.tensor([0.0, 1.0, 2.0])
    # P = [0.5, 0.25]: p = [1 - 0.5, 0.5 - 0.25, 0.25 - 0] = [0.5, 0.25, 0.25]; mean = 0 + 0.75
    # var = 0.5 * 0.75^2 + 0.25 * 0.25^2 + 0.25 * 1.25^2 = 0.28125 + 0.015625 + 0.390625 = 0.6875
    dist = cumulative_to_distribution(torch.tensor([[0.5, 0.25]]), ages)
    assert torch.allclose(dist.probs, torch.tensor([[0.5, 0.25, 0.25]]))
    assert dist.mean.item() == pytest.approx(0.75) and dist.std.item() == pytest.approx(math.sqrt(0.6875))
    # non-monotone P = [0.25, 0.5]: raw [0.75, -0.25, 0.5] -> clipped [0.75, 0, 0.5] -> / 1.25 = [0.6, 0, 0.4];
    # the point estimate stays the sum 0.25 + 0.5 = 0.75
    dist = cumulative_to_distribution(torch.tensor([[0.25, 0.5]]), ages)
    assert torch.allclose(dist.probs, torch.tensor([[0.6, 0.0, 0.4]]))
    assert dist.mean.item() == pytest.approx(0.75)


def test_coral_cumulative_probabilities_never_increase_with_rank():
    """Rank consistency (Cao et al., Theorem 1): one shared weight vector and non-increasing biases give
    P(y > r_k) non-increasing in k for every weight vector and input."""
    torch.manual_seed(0)
    method = create_method("coral", 16, 0, 100)
    feats = torch.randn(256, 16) * 3
    for trial in range(20):
        nn.init.normal_(method.fc.weight, std=float(trial + 1))
        if trial:  # the initial biases, then random ordered ones
            method.bias.data = torch.sort(torch.randn(100) * 10, descending=True).values
        cum = torch.sigmoid(method(feats))
        assert (cum[:, 1:] <= cum[:, :-1]).all()


def test_or_cnn_can_be_rank_inconsistent():
    """Independent tasks: P(y > 1) can exceed P(y > 0). The decoder still returns a distribution."""
    method = create_method("or_cnn", 1, 0, 2)
    with torch.no_grad():
        method.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        method.fc.bias.zero_()
    logits = method(torch.ones(1, 1))  # z = [-1, 1]: P = [0.269, 0.731]
    cum = torch.sigmoid(logits)
    assert cum[0, 1] > cum[0, 0]
    dist = method.decode(logits)
    assert (dist.probs >= 0).all() and dist.probs.sum().item() == pytest.approx(1.0)
    assert dist.probs[0, 1].item() == 0.0  # the negative difference was clipped


# ---- gradchecks -------------------------------------------------------------------------------------------
def test_gradcheck_mean_variance_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    label_ages = torch.arange(4, dtype=torch.float64)
    ages = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    index = torch.tensor([0, 2, 3])
    assert torch.autograd.gradcheck(lambda z: mean_variance_loss(z, ages, label_ages, index)[0], (logits,))


def test_gradcheck_coral_loss_through_the_head():
    torch.manual_seed(0)
    feats = torch.randn(3, 5, dtype=torch.float64)
    weight = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    levels = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    importance = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w, b: ordinal_bce_loss(feats @ w.T + b, levels, importance),
                                    (weight, bias))


def test_gradcheck_drf_nll():
    torch.manual_seed(0)
    split = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    mean = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    var = torch.full((2, 4), 0.7, dtype=torch.float64)
    ages = torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: drf_nll(routing_log_probs(s), ages, mean, var)[0], (split,))


def test_gradcheck_soft_label_loss():
    """focal + KL + L1 on the expectation, in float64 (the soft label itself does not depend on the logits)."""
    from agekit.methods.soft_labels import soft_label_loss

    torch.manual_seed(0)
    logits = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    label_ages = torch.arange(0, 12, 2, dtype=torch.float64)  # a grid of step 2
    ages = torch.tensor([0.0, 4.5, 9.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: soft_label_loss(z, ages, label_ages, g=3.0, class_loss="focal+kl", gamma=2.0, w_reg=0.7,
                                  w_class=1.3)[0], (logits,))


# ---- soft labels ------------------------------------------------------------------------------------------
def test_triangular_soft_label_g3():
    """Weights max(0, (g - |a - y|)/g): age 10, g 3 -> 1/3, 2/3, 1, 2/3, 1/3 at 8..12 (0 at 7 and 13), sum 3."""
    q = triangular_label_distribution(torch.tensor([10.0]), torch.arange(0, 21).float(), 3.0)[0]
    assert torch.allclose(q[8:13], torch.tensor([1, 2, 3, 2, 1]) / 9.0)
    assert q[:8].sum() == 0 and q[13:].sum() == 0 and q.sum().item() == pytest.approx(1.0)
    # at the edge the label is truncated and renormalised: age 0 -> 1, 2/3, 1/3 -> / 2 = 1/2, 1/3, 1/6
    q = triangular_label_distribution(torch.tensor([0.0]), torch.arange(0, 21).float(), 3.0)[0]
    assert torch.allclose(q[:3], torch.tensor([1 / 2, 1 / 3, 1 / 6])) and q[3:].sum() == 0
    # non-integer age 10.5, g 1: ages 10 and 11 get (1 - 0.5)/1 each -> 1/2, 1/2
    q = triangular_label_distribution(torch.tensor([10.5]), torch.arange(0, 21).float(), 1.0)[0]
    assert q[10].item() == pytest.approx(0.5) and q[11].item() == pytest.approx(0.5)


def test_soft_focal_loss_by_hand():
    log_p = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    # -(1 - 0.5)^2 ln 0.5 = 0.25 * 0.693147 = 0.173287; gamma 0 is plain cross-entropy 0.693147
    assert soft_focal_loss(log_p, one_hot, 2.0).item() == pytest.approx(0.173287, abs=1e-6)
    assert soft_focal_loss(log_p, one_hot, 0.0).item() == pytest.approx(0.693147, abs=1e-6)


@pytest.mark.parametrize("class_loss,w_reg,w_class,expected", [
    ("focal", 1.0, 1.0, 1.488272), ("kl", 1.0, 1.0, 1.462098), ("focal+kl", 1.0, 1.0, 1.950370),
    ("focal", 0.5, 2.0, 1.476544)])
def test_soft_labels_loss_by_hand(class_loss, w_reg, w_class, expected):
    # ages 0,1,2; g 2; age 0 -> weights 1, 1/2, 0 -> t = [2/3, 1/3, 0]; uniform softmax p = 1/3, E = 1
    # focal = sum_k t_k (1 - 1/3)^2 ln 3 = 4/9 * 1.098612 = 0.488272
    # KL = 2/3 ln(2/3) + 1/3 ln(1/3) + ln 3 = -0.270310 - 0.366204 + 1.098612 = 0.462098
    # L1 = |1 - 0| = 1;  L = w_reg * 1 + w_class * (focal and/or KL)
    method = create_method("soft_labels", 4, 0, 2, g=2.0, class_loss=class_loss, w_reg=w_reg, w_class=w_class)
    value, parts = method.loss(torch.zeros(1, 3), torch.tensor([0.0]))
    assert value.item() == pytest.approx(expected, abs=1e-5)
    assert parts["l1"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="class_loss"):
        create_method("soft_labels", 4, 0, 2, class_loss="ce")


# ---- Deep Regression Forests ------------------------------------------------------------------------------
def test_drf_routing_by_hand():
    # one tree, depth 3: split nodes 0 (root), 1 (left child), 2 (right child)
    # d = sigmoid([0, ln 3, -ln 3]) = [0.5, 0.75, 0.25]
    # leaves: d0 d1, d0 (1 - d1), (1 - d0) d2, (1 - d0)(1 - d2) = 0.375, 0.125, 0.125, 0.375
    split = torch.tensor([[[0.0, math.log(3), -math.log(3)]]])
    mu = routing_log_probs(split).exp()
    assert torch.allclose(mu, torch.tensor([[[0.375, 0.125, 0.125, 0.375]]]))


def test_drf_nll_and_decoder_by_hand():
    method = create_method("drf", 4, 0, 10, n_trees=1, depth=2, n_units=4, leaf_update_every=0)
    method.leaf_mean.copy_(torch.tensor([[0.0, 10.0]]))
    method.leaf_var.copy_(torch.tensor([[4.0, 4.0]]))
    log_route = torch.log(torch.tensor([[[0.5, 0.5]]]))
    # y = 0: p = 0.5 N(0; 0, 4) + 0.5 N(0; 10, 4) = 0.5 * 0.199471 * (1 + e^-12.5) = 0.099736; -ln p = 2.305229
    value, _ = method.loss(log_route, torch.tensor([0.0]))
    assert value.item() == pytest.approx(2.305229, abs=1e-5)
    # mean = 0.5 * 0 + 0.5 * 10 = 5; var = 0.5 (4 + 0) + 0.5 (4 + 100) - 25 = 29
    dist = method.decode(log_route)
    assert dist.mean.item() == pytest.approx(5.0) and dist.std.item() == pytest.approx(math.sqrt(29), abs=1e-5)
    assert dist.probs.sum().item() == pytest.approx(1.0) and dist.probs[0, 0] == dist.probs[0, 10]


def test_drf_leaf_fixed_point_by_hand():
    # two samples y = 0 and 4, both routed 1/2, 1/2; leaves N(0, 1), N(4, 1)
    # zeta(y=0) = [1, e^-8] / (1 + e^-8) = [0.99966465, 0.00033535]; mirrored for y = 4
    # m_0 = (0.99966465 * 0 + 0.00033535 * 4) / 1 = 0.0013414;  m_1 = 4 - 0.0013414
    # s_0^2 = 0.99966465 * 0.0013414^2 + 0.00033535 * 3.9986586^2 = 0.0053638 -> floored at 0.01
    log_route = torch.log(torch.full((2, 1, 2), 0.5))
    mean, var, _ = leaf_fixed_point(log_route, torch.tensor([0.0, 4.0]), torch.tensor([[0.0, 4.0]]),
                                    torch.tensor([[1.0, 1.0]]), iters=1, min_var=1e-3)
    assert torch.allclose(mean, torch.tensor([[0.0013414, 3.9986586]]), atol=1e-6)
    assert torch.allclose(var, torch.tensor([[0.0053638, 0.0053638]]), atol=1e-6)
    _, var, _ = leaf_fixed_point(log_route, torch.tensor([0.0, 4.0]), torch.tensor([[0.0, 4.0]]),
                                 torch.tensor([[1.0, 1.0]]), iters=1, min_var=0.01)
    assert torch.allclose(var, torch.full((1, 2), 0.01))


def test_drf_leaf_update_never_lowers_the_data_likelihood():
    torch.manual_seed(0)
    n, trees, leaves = 300, 3, 8
    log_route = torch.log_softmax(torch.randn(n, trees, leaves) * 2, dim=-1)  # fixed routing
    ages = torch.randint(0, 80, (n,)).float()
    mean, var = torch.linspace(0, 80, leaves).repeat(trees, 1), torch.full((trees, leaves), 25.0)
    lls = [-drf_nll(log_route, ages, mean, var)[0].item()]
    for _ in range(20):
        mean, var, _ = leaf_fixed_point(log_route, ages, mean, var, iters=1, min_var=0.25)
        lls.append(-drf_nll(log_route, ages, mean, var)[0].item())
    assert all(b >= a - 1e-5 for a, b in zip(lls, lls[1:]))
    assert lls[-1] > lls[0] + 0.05


def test_drf_updates_leaves_inside_loss_only_in_training_mode():
    torch.manual_seed(0)
    method = create_method("drf", 8, 0, 100, n_trees=2, depth=3, n_units=8)
    feats, ages = torch.randn(16, 8), torch.full((16,), 30.0)
    before = method.leaf_mean.clone()
    method.eval()
    method.loss(method(feats), ages)
    assert torch.equal(method.leaf_mean, before)
    method.train()
    method.loss(method(feats), ages)
    moved = (method.leaf_mean - before).abs()
    assert moved.max() > 0 and bool(((method.leaf_mean - 30).abs() <= (before - 30).abs() + 1e-4).all())


class _FlatBackbone(nn.Module):
    num_features = 12

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 12)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Source:
    def __init__(self, images, ages, batch):
        self.images, self.ages, self.batch, self.served = images, ages, batch, 0

    def batches(self, epoch, skip=0):
        for start in range(0, len(self.ages), self.batch):
            self.served += 1
            yield self.images[start:start + self.batch], self.ages[start:start + self.batch], \
                torch.zeros(len(self.ages[start:start + self.batch]), dtype=torch.long)


def test_drf_epoch_end_refits_leaves_from_training_batches():
    from agekit.engine.trainer import collect_outputs

    torch.manual_seed(0)
    method = create_method("drf", 12, 0, 100, n_trees=2, depth=3, n_units=8, epoch_end_batches=3)
    model = AgeModel(_FlatBackbone(), method, [0.5] * 3, [0.25] * 3)
    images = torch.randint(0, 256, (40, 4, 4, 3), dtype=torch.uint8)
    ages = torch.randint(10, 70, (40,)).float()
    source = _Source(images, ages, batch=8)
    model.train()
    x = images.permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        seen = model(x[:24])["age"]  # the 3 batches the refit may use
    nll_before = drf_nll(seen, ages[:24], method.leaf_mean, method.leaf_var)[0].item()
    outputs, seen_ages = collect_outputs(model, source.batches(1), method.epoch_end_batches, torch.device("cpu"),
                                         "fp32", False)
    assert torch.equal(seen_ages, ages[:24])
    method.epoch_end(outputs, seen_ages)
    assert source.served == 3  # capped at epoch_end_batches
    assert model.training  # mode restored
    nll_after = drf_nll(seen, ages[:24], method.leaf_mean, method.leaf_var)[0].item()
    assert nll_after < nll_before
    # the running statistics restart from the refit (a near fixed point after 20 iterations): one more
    # in-loss update from the same data leaves the leaves where the refit put them
    refit = method.leaf_mean.clone()
    method.loss(seen, ages[:24])
    assert (method.leaf_mean - refit).abs().max() < 0.05


def test_trainer_calls_epoch_end_once_per_epoch(tmp_path, monkeypatch):
    from agekit.config import load_config
    from agekit.engine.checkpoint import load_model
    from agekit.engine.trainer import train
    from agekit.methods.forest import DRF
    from support.datasets import synthetic_dataset

    calls = []
    original = DRF.epoch_end
    monkeypatch.setattr(DRF, "epoch_end", lambda self, outputs, ages: (calls.append(len(ages)),
                                                                       original(self, outputs, ages)))
    manifest = synthetic_dataset(tmp_path / "data", n=40)
    cfg = load_config(None, [
        "model.backbone=light_cnn64", "data.crop.size=32", "train.progress=false", "train.tensorboard=false",
        "train.precision=fp32", "train.num_threads=1", "data.dataset=csv", f"data.root={manifest}",
        "data.split.kind=random", "data.split.test_fraction=0.1", "data.split.val_fraction=0.2",
        "train.batch_size=8", "train.epochs=2", "train.scheduler=none", "method.name=drf",
        f"run_dir={tmp_path / 'run'}"])
    summary = train(cfg, progress=False)
    # once per epoch, each time on the same number of training images
    assert len(calls) == 2 and calls[0] == calls[1] > 0 and summary["epochs_completed"] == 2
    assert math.isfinite(summary["best_val_mae"])
    # the refitted leaves travel in the checkpoint and come back with the model
    model, payload = load_model(tmp_path / "run" / "last.pt")
    initial = torch.linspace(0, 100, model.method.n_leaves)
    assert not torch.allclose(model.method.leaf_mean[0], initial)
    assert torch.equal(model.method.leaf_mean, payload["model"]["method.leaf_mean"])
