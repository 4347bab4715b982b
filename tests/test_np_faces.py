"""The multi-task face NP (agekit.runtime.face_np, agekit.runtime.personal, agekit.personalise.fit):
hand-computed pieces, closed forms, leave-self-out, training on a synthetic multi-subject problem where
personalisation must help, the .npz format (numpy-only inference), and the Personalizer's fallbacks and bad
inputs."""
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from agekit.errors import AgekitError
from agekit.personalise.fit import (FitConfig, fit_face_np, ridge_fit, similarity_weights, subject_embeddings,
                                    train_similarity)
from agekit.runtime.face_np import FaceNP, bayes_linear_fit, bayes_linear_predict, softmax
from agekit.runtime.personal import ContextWarning, Personalizer


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def synthetic(n_subjects=40, per=10, f=12, seed=0):
    """Subjects look 6 years older or younger than they are, depending on which of 4 identity clusters they
    belong to (an XOR of two identity directions, so no linear model of the features can know it); one
    feature carries the apparent age."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, f - 1))
    centres[:, :2] = 3.0 * np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]])
    offsets = np.array([6.0, 6.0, -6.0, -6.0])
    X, y, s = [], [], []
    for p in range(n_subjects):
        c = p % 4
        ident = centres[c] + rng.normal(0, 0.5, f - 1)
        off = offsets[c] + rng.normal(0, 1.0)
        for age in rng.uniform(10, 60, per):
            X.append(np.r_[(age + off) / 10 + rng.normal(0, 0.1), ident + rng.normal(0, 0.3, f - 1)])
            y.append(age)
            s.append(f"s{p:02d}")
    return np.array(X), np.array(y), np.array(s)


TRAIN_SUBJECTS = [f"s{p:02d}" for p in range(32)]


@pytest.fixture(scope="module")
def synth():
    X, y, s = synthetic()
    train = np.isin(s, TRAIN_SUBJECTS)
    cfg = FitConfig(target="linear", steps=200, lr=0.01, age_max=100)
    enc = X[:, 0] * 10.0  # an "encoder" that reads the apparent age: wrong by each subject's offset
    model, report = fit_face_np(X[train], y[train], s[train], cfg, encoder_ages=enc[train])
    return {"X": X, "y": y, "s": s, "enc": enc, "train": train, "model": model, "report": report}


# ---------------------------------------------------------------------------------------- pieces by hand

def test_subject_embedding_is_the_elementwise_max():
    xt = np.array([[0.1, 0.9, 0.3],
                   [0.5, 0.2, 0.4],
                   [0.7, 0.1, 0.2],
                   [0.6, 0.8, 0.05]])
    emb = subject_embeddings(xt, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(emb, [[0.5, 0.9, 0.4], [0.7, 0.8, 0.2]])


def test_similarity_is_a_softmax_over_the_other_subjects():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    xt = np.array([[0.5, 0.25], [0.5, 0.25]])
    # scores e_p . x = 0.5, 0.25, 0.75; row 0 leaves subject 2 out, row 1 leaves none out
    s = similarity_weights(emb, xt, beta=1.0, exclude=np.array([2, -1]))
    e05, e025, e075 = math.exp(0.5), math.exp(0.25), math.exp(0.75)
    np.testing.assert_allclose(s[0], [e05 / (e05 + e025), e025 / (e05 + e025), 0.0])
    np.testing.assert_allclose(s[0], [0.562177, 0.437823, 0.0], atol=1e-6)
    total = e05 + e025 + e075
    np.testing.assert_allclose(s[1], [e05 / total, e025 / total, e075 / total])
    assert s[0, 2] == 0.0
    # beta sharpens: beta = 2 doubles the score gaps
    s2 = similarity_weights(emb, xt[:1], beta=2.0, exclude=np.array([2]))
    np.testing.assert_allclose(s2[0, :2], softmax(np.array([1.0, 0.5])))


def test_ridge_fit_matches_the_normal_equations():
    rng = np.random.default_rng(0)
    for n, f in ((30, 5), (6, 20)):  # primal and dual branches
        Z, y = rng.normal(size=(n, f)), rng.normal(size=n)
        alpha = 3.0
        w, b = ridge_fit(Z, y, alpha)
        A = np.c_[Z, np.ones(n)]
        P = alpha * np.eye(f + 1)
        P[-1, -1] = 0.0  # unpenalised intercept
        theta = np.linalg.solve(A.T @ A + P, A.T @ y)
        np.testing.assert_allclose(w, theta[:-1], atol=1e-8)
        assert b == pytest.approx(theta[-1], abs=1e-8)


def test_bayes_linear_fit_is_ridge_toward_the_prior_in_closed_form():
    rng = np.random.default_rng(1)
    Z, r = rng.normal(size=(4, 7)), rng.normal(size=4)
    weights = np.array([1.0, 0.5, 1.0, 0.25])
    sigma_b, sigma_w, sigma = 0.8, 0.3, 0.5
    b, w = bayes_linear_fit(Z, r, (sigma_b, sigma_w, sigma), weights)
    # primal: argmin sum_i v_i (r_i - b - z_i w)^2 + (sigma/sigma_b)^2 b^2 + (sigma/sigma_w)^2 |w|^2
    A = np.c_[np.ones(4), Z]
    P = np.diag([(sigma / sigma_b) ** 2] + [(sigma / sigma_w) ** 2] * 7)
    V = np.diag(weights)
    theta = np.linalg.solve(A.T @ V @ A + P, A.T @ V @ r)
    assert b == pytest.approx(theta[0], abs=1e-10)
    np.testing.assert_allclose(w, theta[1:], atol=1e-10)
    # no data: no correction
    b0, w0 = bayes_linear_fit(Z[:0], r[:0], (sigma_b, sigma_w, sigma))
    assert b0 == 0.0 and not w0.any()


def test_bayes_linear_predictive_variance_shrinks_with_data():
    rng = np.random.default_rng(2)
    prior = (1.0, 0.1, 0.5)
    Zq = rng.normal(size=(3, 5))
    mean0, var0 = bayes_linear_predict(None, [], Zq, prior)
    assert not mean0.any()
    np.testing.assert_allclose(var0, 1.0 + 0.01 * (Zq ** 2).sum(1) + 0.25)
    Z = rng.normal(size=(2, 5))
    _, var2 = bayes_linear_predict(Z, np.array([1.0, 1.2]), Zq, prior)
    Z8 = rng.normal(size=(40, 5))
    _, var40 = bayes_linear_predict(Z8, np.ones(40), Zq, prior)
    assert (var2 < var0).all() and (var40 < var2).all() and (var40 >= 0.25 - 1e-12).all()


# ---------------------------------------------------------------------------------------- leave-self-out

def test_a_subjects_own_function_never_enters_its_mixture(synth):
    m, X, s, train = synth["model"], synth["X"], synth["s"], synth["train"]
    idx = np.searchsorted(m.subjects, s[train])
    out = m.predict_target(X[train], exclude=idx)
    assert (out["weights"][np.arange(len(idx)), idx] == 0).all()
    # changing subject 0's own correction does not change subject 0's leave-self-out estimate
    rows = idx == 0
    before = m.predict_target(X[train][rows], exclude=idx[rows])["mean"]
    m2 = FaceNP(**{**m.__dict__, "corr_b": m.corr_b + np.eye(len(m.corr_b))[0] * 1e3})
    after = m2.predict_target(X[train][rows], exclude=idx[rows])["mean"]
    np.testing.assert_allclose(before, after)
    assert not np.allclose(m2.predict_target(X[train][rows])["mean"], before)  # ... but it would without exclusion


def test_episodic_training_ignores_the_subjects_own_values():
    """In training, a photo's own subject's column of the correction matrix has no effect at all."""
    rng = np.random.default_rng(3)
    n, P = 30, 5
    subj = np.repeat(np.arange(P), 6)
    Z, t, base = rng.normal(size=(n, 4)), rng.normal(size=n), np.zeros(n)
    fcorr = rng.normal(size=(n, P))
    poisoned = fcorr.copy()
    poisoned[np.arange(n), subj] = 1e6
    cfg = FitConfig(hidden=3, steps=15, lr=0.05, val_fraction=0.0)
    a = train_similarity(Z, t, base, fcorr, subj, P, cfg)
    b = train_similarity(Z, t, base, poisoned, subj, P, cfg)
    np.testing.assert_allclose(a[0], b[0])
    assert a[2] == b[2]


# ---------------------------------------------------------------------------------------- training

def test_episodic_training_reduces_the_loss(synth):
    hist = synth["report"]["history"]
    best = hist[-1]["best_step"]
    assert best > 0
    assert hist[-1]["best_val_loss"] < 0.5 * hist[0]["val_loss"]
    assert hist[-2]["loss"] < 0.5 * hist[0]["loss"]


def test_personalisation_beats_the_global_model_on_new_subjects(synth):
    m, X, y, s = synth["model"], synth["X"], synth["y"], synth["s"]
    test = ~synth["train"]
    glob = np.abs(m.predict_global(X[test]) - y[test]).mean()
    np0 = np.abs(m.predict(X[test], variant="mixture")["age"] - y[test]).mean()
    assert glob > 4.0  # the offsets are invisible to a linear model ...
    assert np0 < 0.6 * glob  # ... but the mixture finds the look-alike subjects
    errs = {"global": [], "residual": [], "join": []}
    for subject in np.unique(s[test]):
        rows = np.nonzero(s == subject)[0]
        ctx, q = rows[:3], rows[3:]
        errs["global"].append(np.abs(m.predict_global(X[q]) - y[q]).mean())
        for v in ("residual", "join"):
            errs[v].append(np.abs(m.predict(X[q], X[ctx], y[ctx], variant=v)["age"] - y[q]).mean())
    assert np.mean(errs["residual"]) < 0.4 * np.mean(errs["global"])
    assert np.mean(errs["join"]) < 0.5 * np.mean(errs["global"])
    # more context, less predictive std
    rows = np.nonzero(s == "s35")[0]
    std1 = m.predict(X[rows[5:]], X[rows[:1]], y[rows[:1]])["std"].mean()
    std5 = m.predict(X[rows[5:]], X[rows[:5]], y[rows[:5]])["std"].mean()
    std0 = m.predict(X[rows[5:]], variant="mixture")["std"].mean()
    assert std5 < std1 < std0


def test_fit_rejects_bad_inputs():
    X, y, s = synthetic(n_subjects=4, per=3)
    with pytest.raises(AgekitError, match="at least 3 training subjects"):
        fit_face_np(X[:6], y[:6], s[:6])
    with pytest.raises(AgekitError, match="do not match"):
        fit_face_np(X, y[:-1], s)
    with pytest.raises(AgekitError, match="target"):
        fit_face_np(X, y, s, FitConfig(target="sqrt"))


# ---------------------------------------------------------------------------------------- files

def test_npz_round_trip_and_numpy_only_inference(synth, tmp_path):
    m, X = synth["model"], synth["X"]
    path = m.save(tmp_path / "np.npz")
    m2 = FaceNP.load(path)
    a = m.predict(X[:5], X[5:8], synth["y"][5:8])
    b = m2.predict(X[:5], X[5:8], synth["y"][5:8])
    for key in ("age", "std", "lo", "hi"):
        np.testing.assert_allclose(a[key], b[key])
    assert path.stat().st_size < 200_000
    np.save(tmp_path / "x.npy", X[:5])
    code = ("import sys, numpy as np\n"
            "from agekit.runtime.personal import Personalizer\n"
            f"p = Personalizer(r'{path}')\n"
            f"out = p.predict(np.load(r'{tmp_path / 'x.npy'}'))\n"
            "assert out.ages.shape == (5,) and not out.personalised\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(AgekitError, match="not found"):
        FaceNP.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AgekitError, match="not a readable"):
        FaceNP.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(AgekitError, match="not an agekit face NP"):
        FaceNP.load(other)


# ---------------------------------------------------------------------------------------- Personalizer

def _subject(synth, name):
    rows = np.nonzero(synth["s"] == name)[0]
    return synth["X"][rows], synth["y"][rows]


def test_personalizer_without_enough_context_falls_back_and_says_so(synth):
    p = Personalizer(synth["model"], min_context=2)
    X, y = _subject(synth, "s36")
    plain = p.predict(X)
    assert not plain.personalised and plain.n_context == 0 and plain.notes == []
    np.testing.assert_allclose(plain.ages, synth["model"].predict(X, variant="mixture")["age"])
    one = p.predict(X[2:], X[:1], y[:1], ["a.jpg"])
    assert not one.personalised and any("at least 2 needed" in n for n in one.notes)
    np.testing.assert_allclose(one.ages, plain.ages[2:])
    two = p.predict(X[2:], X[:2], y[:2])
    assert two.personalised and two.n_context == 2
    assert not np.allclose(two.ages, plain.ages[2:])


def test_personalizer_skips_photos_without_a_face(synth):
    p = Personalizer(synth["model"])
    X, y = _subject(synth, "s33")
    out = p.predict(X[3:], [None, X[1], None], [30, y[1], 40], ["a.jpg", "b.jpg", "c.jpg"])
    assert out.personalised and out.n_context == 1
    assert sum("no face found" in n for n in out.notes) == 2 and any("a.jpg" in n for n in out.notes)
    none = p.predict(X[3:], [None], [30], ["a.jpg"])
    assert not none.personalised and any("0 usable context" in n for n in none.notes)


@pytest.mark.parametrize("age,match", [(130, "outside 0-120"), (-1, "outside 0-120"), ("abc", "not a number"),
                                       (float("nan"), "not a finite"), (None, "not a number")])
def test_personalizer_rejects_bad_ages_naming_the_photo(synth, age, match):
    p = Personalizer(synth["model"])
    X, y = _subject(synth, "s33")
    with pytest.raises(AgekitError, match=match) as err:
        p.predict(X[3:], X[:2], [y[0], age], ["a.jpg", "b.jpg"])
    assert "b.jpg" in str(err.value)


def test_personalizer_rejects_bad_features(synth):
    p = Personalizer(synth["model"])
    X, y = _subject(synth, "s33")
    with pytest.raises(AgekitError, match="12 values per photo"):
        p.predict(X[:, :5])
    with pytest.raises(AgekitError, match="b.jpg: features must have"):
        p.predict(X, [X[0], X[1, :3]], [20, 30], ["a.jpg", "b.jpg"])
    with pytest.raises(AgekitError, match="NaN"):
        p.predict(np.full_like(X, np.nan))
    with pytest.raises(AgekitError, match="2 photos but 1 ages"):
        p.predict(X, X[:2], [20])


def test_personalizer_same_photo_with_two_ages_warns_and_merges(synth):
    p = Personalizer(synth["model"])
    X, y = _subject(synth, "s34")
    with pytest.warns(ContextWarning, match="contradictory ages"):
        out = p.predict(X[3:], [X[0], X[0], X[1]], [20, 30, y[1]], ["a.jpg", "a_copy.jpg", "b.jpg"])
    assert out.personalised and out.n_context == 2
    assert any("median age 25" in n for n in out.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same photo with the same age: a note, no warning
        same = p.predict(X[3:], [X[0], X[0]], [y[0], y[0]])
    assert same.n_context == 1 and any("used once" in n for n in same.notes)


def test_personalizer_down_weights_ages_out_of_line(synth):
    p = Personalizer(synth["model"])
    X, y = _subject(synth, "s37")
    ctx, q = slice(0, 5), slice(5, None)
    clean = p.predict(X[q], X[ctx], y[ctx])
    wrong = y[ctx].copy()
    wrong[0] += 45.0  # one age far out of line with its photo and the others
    with pytest.warns(ContextWarning, match="inconsistent"):
        robust = p.predict(X[q], X[ctx], wrong, [f"p{i}.jpg" for i in range(5)])
    assert any("p0.jpg" in n and "down-weighted" in n for n in robust.notes)
    naive = synth["model"].predict(X[q], X[ctx], wrong)
    assert np.abs(robust.ages - clean.ages).mean() < 0.5 * np.abs(naive["age"] - clean.ages).mean()
    # two ages that contradict each other
    two = y[:2].copy()
    two[1] = two[0] + 60 if two[0] < 40 else two[0] - 60
    order = [0, 1]
    with pytest.warns(ContextWarning, match="disagree"):
        out = p.predict(X[q], X[order], np.clip(two, 0, 120))
    assert out.personalised


def test_personalizer_options(synth):
    with pytest.raises(AgekitError, match="min_context"):
        Personalizer(synth["model"], min_context=0)
    with pytest.raises(AgekitError, match="variant"):
        Personalizer(synth["model"], variant="mixture")
    X, y = _subject(synth, "s38")
    join = Personalizer(synth["model"], variant="join").predict(X[3:], X[:3], y[:3])
    assert join.personalised and join.variant == "join"
    assert (join.lo <= join.ages).all() and (join.ages <= join.hi).all()


def test_personalising_the_encoders_own_estimate(synth):
    """With base_ages (the encoder's estimates) the Personalizer corrects those: the product's path."""
    m, enc = synth["model"], synth["enc"]
    assert np.isfinite(m.enc_prior).all() and m.enc_prior[0] > 3.0  # the 6-year offsets, in years
    p = Personalizer(m)
    errs = {"encoder": [], "personal": []}
    for subject in ["s32", "s33", "s34", "s35"]:
        Xs, ys = _subject(synth, subject)
        es = enc[synth["s"] == subject]
        out = p.predict(Xs[3:], Xs[:3], ys[:3], base_ages=es[3:], context_base_ages=es[:3])
        assert out.personalised and out.variant == "encoder+residual"
        errs["encoder"].append(np.abs(es[3:] - ys[3:]).mean())
        errs["personal"].append(np.abs(out.ages - ys[3:]).mean())
    assert np.mean(errs["personal"]) < 0.3 * np.mean(errs["encoder"])
    # too few: the encoder's own estimates come back
    Xs, ys = _subject(synth, "s36")
    es = enc[synth["s"] == "s36"]
    none = p.predict(Xs, [None], [30], base_ages=es, context_base_ages=[None])
    assert not none.personalised and none.variant == "encoder"
    np.testing.assert_allclose(none.ages, es)
    with pytest.raises(AgekitError, match="context_base_ages"):
        p.predict(Xs, Xs[:2], ys[:2], base_ages=es)
    with pytest.raises(AgekitError, match="base_ages must be"):
        p.predict(Xs, Xs[:2], ys[:2], base_ages=es[:3], context_base_ages=es[:2])
    no_prior = FaceNP(**{**m.__dict__, "enc_prior": np.full(3, np.nan)})
    with pytest.raises(AgekitError, match="no prior for the encoder"):
        no_prior.predict_from_encoder(Xs, es)
