"""agekit bench: same protocol for every method, statistics that match numpy, resumability, sweeps, LOPO."""
import json

import numpy as np
import pytest
import torch
import yaml

from agekit.cli import main
from support.datasets import synthetic_dataset

# Tiny runs on the synthetic CSV dataset (brightness encodes age): the point is the bookkeeping, not the MAE.
TINY = ["--backbone", "light_cnn64", "--epochs", "1", "--no-progress", "--no-eval-report",
        "data.crop.size=32", "train.max_steps=2", "train.batch_size=8", "train.precision=fp32",
        "train.num_threads=1", "train.tensorboard=false", "data.split.kind=random",
        "data.split.val_fraction=0.2", "data.split.test_fraction=0.2", "data.limit_train=null",
        "data.limit_eval=null"]


def bench(out, manifest, *argv):
    return main(["bench", "--data", "csv", "--root", str(manifest), "--out", str(out), *argv, *TINY])


def load(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One bench of 2 methods x 2 seeds, shared by the tests below (which leave it as they found it)."""
    root = tmp_path_factory.mktemp("bench")
    manifest = synthetic_dataset(root / "data", n=64)
    out = root / "out"
    assert bench(out, manifest, "--methods", "dldl_v2,regression", "--seeds", "2") == 0
    return out, manifest


def test_results_rows_and_table_statistics(finished):
    out, _ = finished
    res = load(out)
    assert {r["name"] for r in res["rows"]} == {"dldl_v2", "regression"}
    assert len(res["runs"]) == 4 and all(r["status"] == "done" for r in res["runs"])
    assert "method" not in res["protocol"] and res["protocol"]["split_rule"]["rule"]
    assert res["protocol"]["model"]["backbone"] == "light_cnn64"
    md = (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    for row in res["rows"]:
        runs = sorted((r for r in res["runs"] if r["name"] == row["name"]), key=lambda r: r["seed"])
        maes = []
        for run in runs:
            folder = out / "runs" / f"{row['name']}-s{run['seed']}"
            metrics = json.loads((folder / "eval" / "metrics.json").read_text())
            assert run["test_mae"] == metrics["metrics"]["mae"]
            assert run["gender_accuracy"] is not None and run["n_params"] > 0 and run["latency_ms"] > 0
            assert run["train_time_s"] > 0
            # only the method and the seed differ between the runs' configs
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            assert cfg["method"]["name"] == row["name"] and cfg["seed"] == run["seed"]
            assert {k: v for k, v in cfg.items() if k not in ("method", "seed", "name", "run_dir")} == \
                {k: v for k, v in res["protocol"].items() if k != "split_rule"}
            maes.append(run["test_mae"])
        assert row["mae_mean"] == pytest.approx(np.mean(maes), abs=1e-12)
        assert row["mae_std"] == pytest.approx(np.std(maes, ddof=1), abs=1e-12)
        assert f"| `{row['name']}` | {np.mean(maes):.2f} ± {np.std(maes, ddof=1):.2f} (n=2 seeds) |" in md
        # latency is measured once per method, not per seed
        measured = [r for r in runs if json.loads((out / "runs" / f"{row['name']}-s{r['seed']}" / "eval" /
                                                   "metrics.json").read_text())["complexity"]]
        assert len(measured) == 1
    assert md.index("## Protocol") < md.index("| method |") and "agekit bench --methods dldl_v2,regression" in md
    maes_sorted = [r["mae_mean"] for r in res["rows"]]
    assert maes_sorted == sorted(maes_sorted)


def test_second_run_retrains_nothing(finished, monkeypatch):
    out, manifest = finished
    best = sorted(out.glob("runs/*/best.pt"))
    before = [p.stat().st_mtime_ns for p in best]

    def boom(*args, **kwargs):
        raise AssertionError("must not run")

    # a run made before a config key existed still counts when the plan holds that key's default
    config = out / "runs" / "dldl_v2-s1" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    del cfg["train"]["grad_clip"]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    monkeypatch.setattr("agekit.engine.trainer.train", boom)
    monkeypatch.setattr("agekit.engine.evaluate.evaluate_checkpoint", boom)
    assert bench(out, manifest, "--methods", "dldl_v2,regression", "--seeds", "2") == 0
    assert [p.stat().st_mtime_ns for p in best] == before
    assert all(r["status"] == "done" for r in load(out)["runs"])


def test_lost_evaluation_is_redone_alone(finished, monkeypatch):
    out, manifest = finished
    lost = out / "runs" / "regression-s1" / "eval" / "metrics.json"
    lost.unlink()
    res = load(out)
    import agekit.engine.evaluate as evaluate

    original, calls = evaluate.evaluate_checkpoint, []

    def counting(checkpoint, **kwargs):
        calls.append(str(checkpoint))
        return original(checkpoint, **kwargs)

    monkeypatch.setattr("agekit.engine.trainer.train", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", counting)
    assert bench(out, manifest, "--methods", "dldl_v2,regression", "--seeds", "2") == 0
    assert calls == [str(out / "runs" / "regression-s1" / "best.pt")]
    assert lost.is_file()
    again = load(out)
    assert [r["test_mae"] for r in again["runs"]] == [r["test_mae"] for r in res["runs"]]


def test_changed_protocol_does_not_reuse_runs(finished, capsys):
    out, manifest = finished
    code = bench(out, manifest, "--methods", "dldl_v2", "--seeds", "1", "train.lr=0.01")
    err = capsys.readouterr().err
    assert code == 2 and "different configuration" in err and "train.lr" in err


def test_sweep_rows_and_ctrl_c_resume(tmp_path, monkeypatch):
    manifest = synthetic_dataset(tmp_path / "data", n=64)
    out = tmp_path / "out"
    from agekit.engine.trainer import Trainer

    original, calls = Trainer.step_batch, {"n": 0}

    def interrupt_second_run(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # first step of the second run (each run takes 2 steps)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "step_batch", interrupt_second_run)
    argv = ["--sweep", "dldl_v2.lam=0.1,10", "--method-params", "dldl_v2:sigma=3"]
    assert bench(out, manifest, *argv) == 130
    res = load(out)
    assert [r["status"] for r in res["runs"]] == ["done", "interrupted"]
    assert "Unfinished" in (out / "results.md").read_text()
    first_best = out / "runs" / "dldl_v2.lam=0.1-s0" / "best.pt"
    mtime = first_best.stat().st_mtime_ns

    monkeypatch.setattr(Trainer, "step_batch", original)
    assert bench(out, manifest, *argv) == 0
    res = load(out)
    assert sorted(r["name"] for r in res["rows"]) == ["dldl_v2[lam=0.1]", "dldl_v2[lam=10]"]
    assert {r["name"]: r["params"] for r in res["rows"]} == {"dldl_v2[lam=0.1]": {"sigma": 3, "lam": 0.1},
                                                          "dldl_v2[lam=10]": {"sigma": 3, "lam": 10}}
    assert first_best.stat().st_mtime_ns == mtime
    md = (out / "results.md").read_text()
    assert "± — (n=1 seed)" in md and "Unfinished" not in md


@pytest.mark.parametrize("argv,needle", [
    (["--methods", "dldl_v2,nope"], "unknown method 'nope'"),
    (["--sweep", "dldl_v2.label_step=1,2"], "has no parameter 'label_step'"),
    (["--sweep", "dldl_v2.step=1,3"], "must be > 0 and divide age_max - age_min"),
    (["--sweep", "coral.step=2"], "coral has no label grid"),
    (["--method-params", "soft_labels:zz=1"], "has no parameter 'zz'"),
    (["--methods", "dex", "method.name=dex"], "the bench sets 'method' per run"),
    (["--seeds", "x"], "--seeds"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, needle):
    code = main(["bench", "--data", "csv", "--root", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.startswith("agekit: error:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_label_step_sweep_number_of_discrete_labels(finished, tmp_path):
    """DLDL-v2's "number of discrete labels" ablation: one row per label step, the head has K labels, the
    evaluation still sees a distribution over the integer ages."""
    from agekit.engine.checkpoint import load_model

    _, manifest = finished
    out = tmp_path / "steps"
    assert bench(out, manifest, "--sweep", "dldl_v2.step=5") == 0
    res = load(out)
    row, = res["rows"]
    assert row["name"] == "dldl_v2[step=5]" and row["params"] == {"step": 5} and row["mae_mean"] is not None
    folder = out / "runs" / "dldl_v2.step=5-s0"
    assert yaml.safe_load((folder / "config.yaml").read_text())["method"] == {"name": "dldl_v2",
                                                                               "params": {"step": 5}}
    model, _ = load_model(folder / "best.pt")
    assert model.method.num_labels == 21 and model.method.fc.out_features == 21
    dist = model.method.decode(model.method(torch.randn(3, model.num_features)))
    assert dist.probs.shape == (3, 101) and torch.allclose(dist.probs.sum(1), torch.ones(3), atol=1e-5)
    md = (out / "results.md").read_text()
    assert "| `dldl_v2[step=5]` |" in md and "one label every 5 years" in md


def test_fgnet_lopo_protocol_on_subjects(finished, tmp_path):
    _, manifest = finished
    # the same images with 8 subjects of 8 photos each
    lines = manifest.read_text().splitlines()
    subj = tmp_path / "labels.csv"
    subj.write_text("\n".join([lines[0] + ",subject"] + [f"{manifest.parent / line.split(',')[0]},"
                                                        f"{line.split(',', 1)[1]},p{i % 8}"
                                                        for i, line in enumerate(lines[1:])]) + "\n")
    ckpt = finished[0] / "runs" / "dldl_v2-s0" / "best.pt"
    out = tmp_path / "lopo"
    code = main(["bench", "--protocol", "fgnet_lopo", "--pretrained", str(ckpt), "--data", "csv", "--root", str(subj),
                 "--folds", "2", "--out", str(out), *TINY[2:], "data.split.val_fraction=0.3",
                 "data.split.kind=lopo"])
    assert code == 0
    res = load(out)
    runs = res["runs"]
    assert [r["fold"] for r in runs] == ["p0", "p1"] and all(r["status"] == "done" for r in runs)
    assert all(r["n_test"] == 8 for r in runs)
    row, = res["rows"]
    maes = [r["test_mae"] for r in runs]
    assert row["mae_mean"] == pytest.approx(np.mean(maes)) and row["mae_std"] == pytest.approx(np.std(maes, ddof=1))
    assert row["pooled_mae"] == pytest.approx(sum(r["test_mae"] * r["n_test"] for r in runs) / 16)
    cfg = yaml.safe_load((out / "runs" / "dldl_v2-s0" / "p1" / "config.yaml").read_text())
    assert cfg["data"]["split"]["fold"] == "p1"
    assert cfg["data"]["split"]["kind"] == "lopo" and cfg["data"]["crop"]["rule"] == "align"
    assert cfg["data"]["crop"]["size"] == 32 and cfg["train"]["init_from"] == str(ckpt.resolve())
    md = (out / "results.md").read_text()
    assert "pooled MAE" in md and "MAE over folds" in md and "(n=2 folds)" in md


def test_lopo_crop_keeps_an_aligned_checkpoints_window():
    from agekit.bench.planning import lopo_crop

    base = {"size": 64, "rule": "align", "margin": 0.4, "zoom": 1.0, "shift": 0.0}
    aligned = {"size": 64, "rule": "align", "margin": -0.15, "zoom": 1.0, "shift": 0.14}
    assert lopo_crop(base, aligned) == aligned
    chips = {"size": 48, "rule": "full", "margin": 0.1, "zoom": 1.0, "shift": 0.2}
    assert lopo_crop(base, chips) == {"size": 48, "rule": "align", "margin": 0.4, "zoom": 1.0, "shift": 0.0}
