"""The face NP on real FG-NET photos (skipped without ../shared/data/FGNET): features from a checkpoint,
a small leave-one-person-out run of `agekit np-faces` and `agekit np-bank`; and the commands' user errors."""
import json
import warnings

import numpy as np
import pytest

from agekit.cli import main

SUBJECTS = ["001", "002", "003", "004", "005", "006"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """An untrained light_cnn64 at 32 px with the align rule: the pipeline's shapes, not its accuracy."""
    import torch

    from agekit.config import load_config
    from agekit.engine.checkpoint import save_checkpoint
    from agekit.models.age_model import build_model

    torch.manual_seed(0)
    cfg = load_config(None, ["model.backbone=light_cnn64", "data.crop.size=32", "data.crop.rule=align",
                             "gender.enabled=false"])
    path = tmp_path_factory.mktemp("np_faces") / "encoder.pt"
    save_checkpoint(path, build_model(cfg, pretrained=False), cfg)
    return path


def test_fgnet_features_from_a_checkpoint(fgnet_root, encoder, tmp_path):
    from agekit.personalise.features import fgnet_features

    ff = fgnet_features(encoder, fgnet_root, subjects=SUBJECTS[:3], cache_dir=tmp_path)
    assert ff.features.shape == (len(ff), 256) and ff.features.dtype == np.float32
    assert sorted(set(ff.subjects.tolist())) == SUBJECTS[:3]
    assert np.isfinite(ff.features).all() and ((0 <= ff.encoder_age) & (ff.encoder_age <= 100)).all()
    assert all(k.startswith("images/00") for k in ff.keys)
    again = fgnet_features(encoder, fgnet_root, subjects=SUBJECTS[:3], cache_dir=tmp_path)  # from the cache
    np.testing.assert_array_equal(again.features, ff.features)
    assert list(tmp_path.joinpath("np_faces").glob("fgnet-*.npz"))


def test_np_faces_and_np_bank_on_a_few_subjects(fgnet_root, encoder, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["np-faces", "--checkpoint", str(encoder), "--data", str(fgnet_root), "--out", str(out),
                 "--subjects", ",".join(SUBJECTS), "--folds", "3", "--draws", "2", "--k", "1,2,12",
                 "--steps", "20"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["subjects"] == SUBJECTS[:3]
    assert results["data"]["subjects"] == 6
    s = results["summary"]
    assert set(s) == {"0", "1", "2", "12"}
    assert s["0"]["folds"] == 3 and set(s["0"]["settings"]) == {"encoder", "global", "np"}
    assert set(s["1"]["settings"]) >= {"np+residual", "np+join", "global+offset"}
    # subjects with fewer than 13 photos are skipped for k = 12, and said so
    n_images = {k: v["n_images"] for k, v in results["per_fold"].items()}
    assert results["skipped"]["12"] == [k for k, n in n_images.items() if n < 13]
    assert s.get("12", {"folds": 0})["folds"] == 3 - len(results["skipped"]["12"])
    for row in s["1"]["settings"].values():
        assert np.isfinite(row["mean"]) and row["mean"] >= 0
    cal = results["calibration"]["np+residual"]["by_k"]["1"]
    assert 0 <= cal["coverage90"] <= 1 and cal["n"] > 0
    md = (out / "results.md").read_text()
    assert "## Verdict" in md and "mae_vs_k.png" in md and "skipped" in md.lower()
    assert (out / "mae_vs_k.png").stat().st_size > 10_000
    assert not list(out.glob(".*"))  # no temporary files left
    assert "wrote" in capsys.readouterr().out

    bank = tmp_path / "bank.npz"
    assert main(["np-bank", "--checkpoint", str(encoder), "--data", str(fgnet_root), "--out", str(bank),
                 "--subjects", ",".join(SUBJECTS)]) == 0
    from agekit.personalise.features import fgnet_features
    from agekit.runtime.personal import ContextWarning, Personalizer

    p = Personalizer(bank)
    assert list(p.model.subjects) == SUBJECTS
    assert p.model.meta["encoder"]["backbone"] == "light_cnn64"
    ff = fgnet_features(encoder, fgnet_root, subjects=["007"])
    with warnings.catch_warnings():  # an untrained encoder may find the two ages out of line with the photos
        warnings.simplefilter("ignore", ContextWarning)
        out1 = p.predict(ff.features[2:], ff.features[:2], ff.ages[:2])
    assert out1.personalised and out1.ages.shape == (len(ff) - 2,)


@pytest.mark.parametrize("argv,match", [
    (["--k", "0"], "--k must list"),
    (["--k", "1,x"], "--k must be"),
    (["--draws", "0"], "--draws"),
    (["--folds", "0"], "--folds"),
    (["--subjects", "001,002"], "at least 3 subject"),
])
def test_np_faces_user_errors(argv, match, encoder, fgnet_root, tmp_path, capsys):
    code = main(["np-faces", "--checkpoint", str(encoder), "--data", str(fgnet_root), "--out", str(tmp_path / "o")]
                + argv)
    assert code == 2
    assert match in capsys.readouterr().err


def test_np_commands_missing_inputs(tmp_path, capsys):
    assert main(["np-faces", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["np-bank", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path / "nofgnet"),
                 "--out", str(tmp_path / "b.npz")]) == 2
    assert "FG-NET not found" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"x")
    assert main(["np-bank", "--checkpoint", str(tmp_path / "x.pt"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "b.txt")]) == 2
    assert ".npz" in capsys.readouterr().err
