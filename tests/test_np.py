"""Neural processes (agekit.neural_process): shapes and gradients, empty contexts, padding masks, a short training run
on sine functions (uncertainty shrinks with more context, held-out log-likelihood beats the prior), the
sampler's reproducibility and the np-demo command's user errors."""
import math

import pytest
import torch

from agekit.cli import main
from agekit.neural_process import MODELS, SineSampler, build_model, evaluate, prior_log_likelihood, train_model

SMALL = {"d_hidden": 32, "d_latent": 32, "n_heads": 4, "n_self_attention": 1}
TRAIN_ITERS = 300
CONTEXTS = (2, 20, 50)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("n_context", [0, 1, 5])
def test_forward_backward_shapes(name, n_context):
    torch.manual_seed(0)
    model = build_model(name, d_x=2, d_y=1, **SMALL)
    b, n_t = 3, 7
    x_c, y_c = torch.randn(b, n_context, 2), torch.randn(b, n_context, 1)
    x_t, y_t = torch.randn(b, n_t, 2), torch.randn(b, n_t, 1)

    mean, std, extras = model(x_c, y_c, x_t, y_t)
    assert mean.shape == std.shape == (b, n_t, 1)
    assert bool((std >= 0.1).all()) and bool(torch.isfinite(mean).all())
    assert ("kl" in extras) == model.has_latent
    if model.has_latent:
        assert extras["kl"].shape == (b,) and bool((extras["kl"] >= 0).all())

    loss = model.loss(x_c, y_c, x_t, y_t)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)

    model.eval()
    mean, std, extras = model(x_c, y_c, x_t)          # prediction without targets: no KL
    assert mean.shape == (b, n_t, 1) and "kl" not in extras
    pm, ps = model.predict(x_c, y_c, x_t, n_samples=4)
    assert pm.shape == ps.shape == (b, n_t, 1) and bool((ps >= 0.1).all())
    ll = model.log_likelihood(x_c, y_c, x_t, y_t, n_samples=4)
    assert ll["joint"].shape == ll["marginal"].shape == (b,)
    assert bool(torch.isfinite(ll["joint"]).all())


@pytest.mark.parametrize("name", list(MODELS))
def test_empty_context_uses_the_learned_empty_vector(name):
    """Nc = 0 and a fully masked context give the same prediction, for every function alike."""
    torch.manual_seed(0)
    model = build_model(name, d_x=2, d_y=1, **SMALL).eval()
    x_t = torch.randn(1, 6, 2).expand(2, 6, 2)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    empty = model.predict(torch.zeros(2, 0, 2), torch.zeros(2, 0, 1), x_t, generator=g())
    masked = model.predict(torch.randn(2, 4, 2), torch.randn(2, 4, 1), x_t,
                           mask_c=torch.zeros(2, 4, dtype=torch.bool), generator=g())
    torch.testing.assert_close(empty[0], masked[0])
    torch.testing.assert_close(empty[1], masked[1])


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_mask_equals_dropping_the_points(name):
    torch.manual_seed(0)
    model = build_model(name, d_x=2, d_y=1, **SMALL).eval()
    x_c, y_c, x_t = torch.randn(1, 5, 2), torch.randn(1, 5, 1), torch.randn(1, 6, 2)
    pad_x = torch.cat([x_c, torch.randn(1, 3, 2)], 1)
    pad_y = torch.cat([y_c, torch.randn(1, 3, 1)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    plain = model.predict(x_c, y_c, x_t, generator=g())
    padded = model.predict(pad_x, pad_y, x_t, mask_c=mask, generator=g())
    torch.testing.assert_close(plain[0], padded[0])
    torch.testing.assert_close(plain[1], padded[1])


def test_shape_errors_are_clear():
    model = build_model("cnp", d_x=2, d_y=1, d_hidden=16)
    with pytest.raises(ValueError, match=r"x_c must have shape \(B, N, 2\)"):
        model(torch.zeros(1, 3, 1), torch.zeros(1, 3, 1), torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="unknown neural process"):
        build_model("gp")


# -- sine sampler -----------------------------------------------------------------------------------------
def test_sampler_is_reproducible_and_targets_contain_the_context():
    a, b, c = SineSampler(seed=3), SineSampler(seed=3), SineSampler(seed=4)
    for _ in range(3):
        ba, bb = a.batch(16), b.batch(16)
        bc = c.batch(16, n_context=ba.x_c.shape[1], n_target=ba.x_t.shape[1])
        for name in ("x_c", "y_c", "x_t", "y_t", "amplitude", "phase"):
            assert torch.equal(getattr(ba, name), getattr(bb, name))
        assert not torch.equal(ba.x_t, bc.x_t)                     # another seed, other functions
        n_c = ba.x_c.shape[1]
        assert ba.x_t.shape[1] >= max(n_c, 1)
        assert torch.equal(ba.x_t[:, :n_c], ba.x_c) and torch.equal(ba.y_t[:, :n_c], ba.y_c)
        assert bool(((ba.amplitude >= 0.1) & (ba.amplitude <= 5)).all())
        assert bool(((ba.phase >= 0) & (ba.phase <= math.pi)).all())
        assert bool((ba.x_t.abs() <= 5).all())
        torch.testing.assert_close(ba.y_t, ba.amplitude[:, None, None] * torch.sin(ba.x_t - ba.phase[:, None, None]))
    sizes = {SineSampler(seed=s).batch(2).x_c.shape[1] for s in range(20)}
    assert len(sizes) > 5                                          # the context size varies


# -- short training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """The three models after a short training on sine functions, and one held-out set (fixed seeds)."""
    torch.set_num_threads(1)
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, **SMALL)
        models[name] = train_model(model, SineSampler(seed=0), TRAIN_ITERS, lr=1e-3, seed=0)
    heldout = SineSampler(seed=1).heldout(64, max(CONTEXTS), 50)
    mean, std = SineSampler(seed=2).marginal_moments(2000)
    return models, heldout, prior_log_likelihood(heldout, mean, std)


@pytest.mark.parametrize("name", list(MODELS))
def test_uncertainty_shrinks_with_more_context(trained, name):
    models, heldout, _ = trained
    stds = [evaluate(models[name], heldout, n, n_samples=8)["mean_std"] for n in CONTEXTS]
    # 2 -> 20 points: a clear drop (>= 3%); 20 -> 50: the models' own trend is small after a short training,
    # so only the order is required (it fails if the predicted std does not depend on the context size)
    assert stds[1] < 0.97 * stds[0] and stds[2] < stds[1], stds


@pytest.mark.parametrize("name", list(MODELS))
def test_heldout_likelihood_beats_the_prior_with_20_context_points(trained, name):
    models, heldout, prior = trained
    result = evaluate(models[name], heldout, 20, n_samples=8)
    # margin: a few standard errors of the difference, so that noise alone cannot pass it
    assert result["ll"] > prior["ll"] + 3 * max(result["ll_sem"], prior["ll_sem"]), (result, prior)


# -- command -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["np-demo", "--models", "cnp,gp"], "unknown model 'gp'"),
    (["np-demo", "--models", ","], "--models is empty"),
    (["np-demo", "--models", "np,np"], "names a model twice"),
    (["np-demo", "--iters", "0"], "--iters must be a positive"),
    (["np-demo", "--iters", "-5"], "--iters must be a positive"),
])
def test_np_demo_user_errors_are_one_line(capsys, tmp_path, argv, needle):
    code = main(argv + ["--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("agekit: error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_np_demo_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["np-demo", "--models", "cnp", "--iters", "3", "--hidden", "16", "--eval-functions", "4",
                 "--out", str(out)])
    assert code == 0
    import json

    summary = json.loads((out / "np_demo.json").read_text())
    assert set(summary["table_ll"]["cnp"]) == {"2", "20", "50"}
    assert math.isfinite(summary["prior_baseline"]["ll"])
    assert (out / "np_demo.png").stat().st_size > 1000
