"""agekit export: ONNX graph, metadata, parity with torch on real crops, multi-view models, int8. Needs torch:
the tiny run is trained here (fixture `tiny_trained`), and checked against the committed tests/data/tiny-age.onnx."""
import json
import re

import numpy as np
import pytest
import torch
from support.models import TINY_ONNX

from agekit.cli import main
from agekit.config import load_config
from agekit.crop import CropSpec, crop_face
from agekit.engine.checkpoint import load_model, save_checkpoint
from agekit.engine.export import export_checkpoint
from agekit.engine.inference import predict_images
from agekit.errors import AgekitError
from agekit.io import load_image
from agekit.models.age_model import build_model
from agekit.runtime import AgeEstimator, OnnxAgeModel
from agekit.runtime.quantize import quantization_cost


@pytest.fixture(scope="session")
def tiny(tiny_trained):
    """Trained here, not the committed file: these tests compare the ONNX model with its torch checkpoint."""
    return tiny_trained


@pytest.fixture(scope="module")
def real_crops(utkface_root):
    """32-px "align" crops (box = most of the chip) of 24 UTKFace chips spread over the ages."""
    names = sorted(p for p in utkface_root.glob("*.jpg") if re.match(r"\d+_[01]_", p.name))
    picked = names[:: max(1, len(names) // 24)][:24]
    spec = CropSpec(size=32, rule="align", margin=0.4)
    crops = np.stack([crop_face(load_image(p), spec, box=(20, 30, 180, 190)) for p in picked])
    return crops, np.array([float(p.name.split("_")[0]) for p in picked])


def test_exported_model_matches_torch_on_real_crops(tiny, real_crops):
    crops, _ = real_crops
    model, _ = load_model(tiny["checkpoint"])
    ref = predict_images(model, crops, keep_probs=True, channels_last=False)
    onnx = OnnxAgeModel(tiny["onnx"], threads=1)
    got = onnx.run(crops, batch_size=7)                           # several batches: dynamic batch axis
    assert np.abs(got["age"] - ref["age"]).max() < 0.05            # the parity bound, in years
    assert np.abs(got["std"] - ref["std"]).max() < 0.05
    assert np.abs(got["probs"] - ref["probs"]).max() < 1e-4
    assert np.abs(got["gender"] - ref["gender_prob"]).max() < 1e-4
    with torch.no_grad():
        feats = model.features(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
    assert got["embedding"].shape == (len(crops), 256)
    assert np.abs(got["embedding"] - feats.numpy()).max() < 1e-3
    assert onnx.run(crops[:1])["age"].shape == (1,)
    assert np.allclose(got["probs"].sum(1), 1, atol=1e-5) and got["probs"].shape == (len(crops), 101)


def test_metadata_describes_crop_ages_calibration_and_provenance(tiny):
    meta = OnnxAgeModel(tiny["onnx"]).meta
    assert meta["format"] == "agekit-onnx-v1"
    assert meta["crop"]["rule"] == "align" and meta["crop"]["size"] == 32 and len(meta["views"]) == 1
    assert (meta["age_min"], meta["age_max"], meta["gender"]) == (0, 100, True)
    assert meta["outputs"] == ["probs", "age", "std", "gender", "embedding"] and meta["embedding_size"] == 256
    assert meta["landmarks"] == "dataset" and meta["detector"] is None
    assert meta["checkpoint"]["steps"] == 2 and "val_mae" in meta["checkpoint"]["metrics"]
    c = meta["calibration"]
    assert c["method"] == "split-conformal" and c["split"] == "val" and c["level"] == 0.9
    n = c["n"]
    assert n == 14 and c["coverage"] >= 0.9 and set(c["quantiles"]) == {"0.8", "0.9", "0.95"}
    assert c["quantiles"]["0.95"] is None          # ceil(15 * 0.95) = 15 > 14 faces: too few for 95%
    assert c["q"] == c["quantiles"]["0.9"] > 0     # ceil(15 * 0.9) = 14: the largest score


def test_committed_tiny_model_matches_a_fresh_export(tiny):
    """tests/data/tiny-age.onnx is this run exported: same metadata but for the version and trained numbers.
    When this fails, the export format changed: python tests/data/make_tiny_model.py remakes the file."""
    fresh, committed = OnnxAgeModel(tiny["onnx"]).meta, OnnxAgeModel(TINY_ONNX).meta
    numbers = ("agekit_version", "checkpoint", "calibration")
    assert {k: v for k, v in committed.items() if k not in numbers} == {
        k: v for k, v in fresh.items() if k not in numbers}, "remake it: python tests/data/make_tiny_model.py"
    for key in ("checkpoint", "calibration"):
        assert set(committed[key]) == set(fresh[key])
    assert committed["calibration"]["n"] == fresh["calibration"]["n"]


def test_multi_view_model_exports_with_one_input_per_view(tmp_path):
    cfg = load_config(None, ["model.backbone=light_cnn64", "data.crop.size=32", "data.crop.zoom=1.2",
                             "data.extra_views=[{size: 48, zoom: 0.8}]", "method.name=regression"])
    model = build_model(cfg, pretrained=False).eval()
    save_checkpoint(tmp_path / "mv.pt", model, cfg)
    meta = export_checkpoint(tmp_path / "mv.pt", tmp_path / "mv.onnx", calibrate_on="none", progress=False)
    assert [v["size"] for v in meta["views"]] == [32, 48] and meta["inputs"] == ["image", "image_1"]
    assert meta["calibration"] is None and meta["gender"] is False
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (5, s, s, 3), dtype=np.uint8) for s in (32, 48)]
    onnx = OnnxAgeModel(tmp_path / "mv.onnx")
    ref = predict_images(model, views, channels_last=False)
    assert np.abs(onnx.run(views)["age"] - ref["age"]).max() < 0.05
    assert "gender" not in onnx.run(views)
    # the estimator crops every view from a face image; without calibration the interval comes from the
    # method's own distribution (regression: a point, so a one-year interval at most)
    faces = AgeEstimator(tmp_path / "mv.onnx", threads=1).predict_crops([views[1][0]], aligned=False)
    assert len(faces) == 1 and faces[0].gender is None and faces[0].interval[1] - faces[0].interval[0] <= 1


def test_int8_quantisation_runs_and_reports_its_cost(tiny, tmp_path, real_crops):
    out = tmp_path / "tiny-int8.onnx"
    meta = export_checkpoint(tiny["checkpoint"], out, quantize="int8", progress=False)
    q = meta["quantization"]
    assert q["mode"] == "static" and q["format"] == "QDQ"
    cost = q["cost_on_val"]
    assert cost["n"] == 14 and {"mae_float", "mae_int8", "mae_increase", "mean_abs_change"} <= set(cost)
    assert out.stat().st_size < tiny["onnx"].stat().st_size / 2
    int8 = OnnxAgeModel(out)
    assert int8.meta["quantization"] == q and int8.meta["calibration"]["n"] == 14  # calibrated on its own output
    crops, ages = real_crops
    report = quantization_cost(tiny["onnx"], out, [crops], ages)
    assert report["n"] == len(crops) and report["mean_abs_change"] < 5
    assert report["mae_increase"] == pytest.approx(report["mae_int8"] - report["mae_float"])


def test_export_command_and_its_errors(tiny, tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {"n": 3, "mae": 4.5}, "protocol": {"split": "test", "dataset": "csv"}}))
    out = tmp_path / "cli.onnx"
    code = main(["export", str(tiny["checkpoint"]), "--onnx", str(out), "--calibrate", "none", "--metrics",
                 str(metrics), "--no-progress"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    meta = OnnxAgeModel(out).meta
    assert meta["test_metrics"]["metrics"]["mae"] == 4.5 and meta["calibration"] is None

    for argv, needle in [
        (["export", str(tmp_path / "none.pt"), "--onnx", str(tmp_path / "x.onnx")], "checkpoint not found"),
        (["export", str(tiny["checkpoint"]), "--onnx", str(tmp_path / "x.txt")], "must end in .onnx"),
        (["export", str(tiny["checkpoint"]), "--onnx", str(tmp_path / "x.onnx"), "--data",
          str(tmp_path / "missing")], "missing"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.startswith("agekit: error:") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x*"))  # nothing half-written


def test_not_an_agekit_model_is_a_clear_error(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(AgekitError, match="not a readable ONNX model"):
        OnnxAgeModel(tmp_path / "junk.onnx")
    import onnx

    bare = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["age"])], "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("age", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(AgekitError, match="not an agekit model"):
        OnnxAgeModel(tmp_path / "bare.onnx")
    with pytest.raises(AgekitError, match="model file not found"):
        OnnxAgeModel(tmp_path / "absent.onnx")
