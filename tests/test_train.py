"""End-to-end training: a real UTKFace slice, exact resume, interruption, fine-tuning."""
import csv
import json
import statistics

import pytest
import torch

from agekit.config import load_config
from agekit.engine.checkpoint import load_model, read_checkpoint
from agekit.engine.trainer import Trainer, train
from support.datasets import synthetic_dataset

TINY = ["model.backbone=light_cnn64", "data.crop.size=32", "train.progress=false", "train.tensorboard=false",
        "train.precision=fp32", "augment.enabled=true", "train.num_threads=1"]


def tiny_config(tmp_path, run, *extra):
    manifest = synthetic_dataset(tmp_path / "data")
    return load_config(None, TINY + [
        "data.dataset=csv", f"data.root={manifest}", "data.split.kind=random", "data.split.test_fraction=0.1",
        "data.split.val_fraction=0.2", "train.batch_size=8", "train.epochs=3", "train.scheduler=none",
        f"run_dir={tmp_path / run}", *extra])


def weights(path):
    return read_checkpoint(path)["model"]


@pytest.mark.slow
def test_training_on_utkface_slice_lowers_validation_mae(utkface_root, tmp_path):
    cfg = load_config(None, [
        f"data.root={utkface_root}", "data.limit_train=2048", "data.limit_eval=384", "model.backbone=light_cnn64",
        "data.crop.size=32", "train.batch_size=32", "train.max_steps=300", "train.val_every_steps=50",
        "train.epochs=20", "train.lr=2e-3", "train.warmup_epochs=0.2", "train.progress=false",
        f"run_dir={tmp_path / 'run'}"])
    summary = train(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "split.csv", "best.pt", "last.pt", "metrics.csv", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "tb").is_dir()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = [float(r["mae"]) for r in rows if r["split"] == "val"]
    assert len(val) == 6
    train_ages = [float(line.split("_")[0]) for line in
                  [r.split(",")[0] for r in (run / "split.csv").read_text().splitlines() if r.endswith(",train")]]
    prior_mae = statistics.mean(abs(a - statistics.median(train_ages)) for a in train_ages)
    # falling: the last validations beat the first, and the model beats guessing the median age
    assert val[-1] < val[0] * 0.8
    assert summary["best_val_mae"] < prior_mae * 0.85
    assert summary["best_val_mae"] == pytest.approx(min(val), abs=1e-3)
    payload = read_checkpoint(run / "best.pt")
    assert payload["inference"]["crop"] == {"size": 32, "rule": "full", "margin": 0.4, "zoom": 1.0, "shift": 0.0}
    assert payload["inference"]["method"] == "dldl_v2" and payload["inference"]["age_max"] == 100


def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = train(tiny_config(tmp_path, "straight", "train.max_steps=7"))
    assert straight["steps"] == 7

    calls = {"n": 0}
    original = Trainer.step_batch

    def interrupt_on_fourth(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "step_batch", interrupt_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path, "resumed", "train.max_steps=7"))
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["state"]["step"] == 3
    monkeypatch.setattr(Trainer, "step_batch", original)
    resumed = train(tiny_config(tmp_path, "resumed", "train.max_steps=7"))
    assert resumed["steps"] == 7
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "resumed" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fine_tune_starts_from_the_checkpoint_backbone(tmp_path):
    train(tiny_config(tmp_path, "pre", "train.max_steps=3"))
    cfg = tiny_config(tmp_path, "fine", "train.max_steps=1", f"train.init_from={tmp_path / 'pre' / 'best.pt'}",
                      "train.init_head=false", "data.age_max=90")
    trainer = Trainer(cfg, progress=False)
    trainer.setup()
    source = weights(tmp_path / "pre" / "best.pt")
    own = trainer.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.items() if k.startswith("backbone."))
    assert own["method.fc.weight"].shape[0] == 91  # new label range -> new head, not copied


def test_early_stopping_and_run_outputs(tmp_path):
    summary = train(tiny_config(tmp_path, "es", "train.epochs=50", "train.early_stop_patience=2",
                                "train.lr=1e-7"))
    # with a learning rate this small nothing improves after the first validation, so it stops early
    assert summary["epochs_completed"] < 50
    saved = json.loads((tmp_path / "es" / "summary.json").read_text())
    assert saved["steps"] == summary["steps"] and saved["world_size"] == 1
    model, payload = load_model(tmp_path / "es" / "best.pt")
    assert payload["config"]["data"]["crop"]["size"] == 32
    out = model(torch.rand(2, 3, 32, 32))
    assert out["age"].shape == (2, 101)


def test_eval_command_writes_a_full_report(tmp_path, capsys):
    from agekit.cli import main

    train(tiny_config(tmp_path, "ev", "train.max_steps=4", "gender.enabled=true"))
    code = main(["eval", str(tmp_path / "ev" / "best.pt"), "--split", "all", "--out", str(tmp_path / "rep"),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "MAE" in out
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    rows = (tmp_path / "rep" / "predictions.csv").read_text().splitlines()
    assert report["metrics"]["n"] == 64 == len(rows) - 1
    assert "gender_accuracy" in report["metrics"] and report["complexity"]["params"] > 0
    assert report["protocol"]["crop"]["size"] == 32 and report["protocol"]["method"] == "dldl_v2"
    for name in ("report.md", "pred_vs_true.png", "mae_by_age.png", "error_hist.png", "examples.png"):
        assert (tmp_path / "rep" / name).is_file(), name


def test_multi_input_model_trains_resumes_and_evaluates(tmp_path, capsys):
    """Two crops of each face (tight 32x32 and a wider 48x48 view) through separate stems, fused."""
    from agekit.cli import main
    from agekit.models.age_model import build_model

    views = ["data.extra_views=[{size: 48, zoom: 0.7}]", "data.crop.zoom=1.3"]
    cfg = tiny_config(tmp_path, "mv", "train.max_steps=5", *views)
    model = build_model(cfg)
    assert model.num_views == 2 and model.num_features == 2 * model.backbone.num_features
    out = model([torch.rand(2, 3, 32, 32), torch.rand(2, 3, 48, 48)])
    out["age"].sum().backward()
    assert model.extra_backbones[0].parameters().__next__().grad is not None
    with pytest.raises(ValueError, match="2 input view"):
        model(torch.rand(2, 3, 32, 32))

    summary = train(cfg)
    assert summary["steps"] == 5
    payload = read_checkpoint(tmp_path / "mv" / "best.pt")
    assert [v["size"] for v in payload["inference"]["views"]] == [32, 48]
    assert main(["eval", str(tmp_path / "mv" / "best.pt"), "--split", "all", "--out", str(tmp_path / "rep"),
                 "--no-progress"]) == 0
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert report["metrics"]["n"] == 64 and report["complexity"]["input_size"] == [32, 48]


def test_uncached_training_skips_unreadable_images(tmp_path):
    cfg = tiny_config(tmp_path, "nc", "train.max_steps=3", "data.cache=false")
    (tmp_path / "data" / "img005.png").write_bytes(b"broken")
    assert train(cfg)["steps"] == 3
