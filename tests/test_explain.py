"""agekit.explain: occlusion maps on the ONNX runtime, their geometry, Grad-CAM, the deletion check, the CLI.

A synthetic ONNX model whose age is 30 + 40 x the mean brightness of one square region of its 48-px crop
(built with onnx.helper) must give occlusion maps that are exactly 0 away from that region and peak on it;
a tiny torch network whose features are gated to one region must give a Grad-CAM peaking there.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agekit.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
S = 48
REGION = (8, 20, 28, 40)  # rows y0:y1, cols x0:x1 of the crop the synthetic model reads


def region_model(path: Path) -> Path:
    """An agekit ONNX model: age = 30 + 40 * mean(image[:, :, 8:20, 28:40]); probs a narrow bump there."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    y0, y1, x0, x1 = REGION
    ages = np.arange(0, 101, dtype=np.float32)
    const = lambda name, arr: helper.make_tensor(name, TensorProto.FLOAT if arr.dtype == np.float32
                                                 else TensorProto.INT64, arr.shape, arr.ravel().tolist())
    inits = [const("starts", np.array([y0, x0], np.int64)), const("ends", np.array([y1, x1], np.int64)),
             const("axes", np.array([2, 3], np.int64)), const("ax1", np.array([1], np.int64)), const("w", np.array(40.0, np.float32)),
             const("b", np.array(30.0, np.float32)), const("ages", ages.reshape(1, -1)),
             const("neg_inv", np.array(-1 / 50.0, np.float32)), const("zero", np.array(0.0, np.float32))]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["patch"]),
        helper.make_node("ReduceMean", ["patch"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "w"], ["mw"]),
        helper.make_node("Add", ["mw", "b"], ["age"]),
        helper.make_node("Unsqueeze", ["age", "ax1"], ["age_col"]),
        helper.make_node("Sub", ["ages", "age_col"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("Mul", ["d2", "neg_inv"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["m0", "w"], ["std"]),  # a constant 40 per face
        helper.make_node("ReduceMean", ["image"], ["embedding"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "region_age", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, S, S])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 101]),
         helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("std", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    meta = {"format": "agekit-onnx-v1", "views": [{"size": S, "rule": "align", "margin": 0.0, "zoom": 1.0,
                                                   "shift": 0.0}],
            "age_min": 0, "age_max": 100, "gender": False, "embedding_size": 3, "method": "synthetic"}
    entry = model.metadata_props.add()
    entry.key, entry.value = "agekit", json.dumps(meta)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from agekit import AgeEstimator

    return AgeEstimator(region_model(tmp_path_factory.mktemp("m") / "region.onnx"), threads=1)


def textured(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- occlusion (ONNX runtime only)

def test_occlusion_map_peaks_on_the_region_the_model_reads(synthetic):
    y0, y1, x0, x1 = REGION
    image = textured(96, 96) // 3  # a dim textured photo ...
    image[24 + y0:24 + y1, 24 + x0:24 + x1] = 170 + textured(y1 - y0, x1 - x0) // 3  # ... bright where it reads
    box = (24, 24, 72, 72)  # margin 0, 48 px: the crop is image[24:72, 24:72] at scale 1
    (e,) = synthetic.explain(image, boxes=[box])
    assert e.crop.shape == (S, S, 3) and np.array_equal(e.crop, image[24:72, 24:72])
    for m in (e.saliency, e.age_effect):
        assert m.shape == (S, S) and m.dtype == np.float32 and np.isfinite(m).all()
    y0, y1, x0, x1 = REGION
    inside = np.zeros((S, S), bool)
    inside[y0:y1, x0:x1] = True
    assert np.unravel_index(e.saliency.argmax(), e.saliency.shape) in set(zip(*np.nonzero(inside)))
    # a patch is 2 cells of 6 px: every patch that misses the region leaves the age exactly as it was
    near = np.zeros((S, S), bool)
    near[max(0, y0 - 12):y1 + 12, max(0, x0 - 12):x1 + 12] = True
    assert np.abs(e.saliency[~near]).max() < 1e-4
    assert e.saliency[inside].mean() > 2 * e.saliency[near & ~inside].mean() > 0
    assert (e.age_effect[inside] > 0).all()  # the bright region makes the face "older": hiding it lowers the age
    assert e.base_age == pytest.approx(30 + 40 * image[24 + y0:24 + y1, 24 + x0:24 + x1].mean() / 255, abs=1e-3)
    # over the photo: the same map, moved by the box's offset, 0 outside the crop window
    photo, coverage = e.photo_map()
    assert photo.shape == (96, 96) and np.isfinite(photo).all() and coverage.shape == (96, 96)
    assert np.allclose(photo[24:72, 24:72], e.saliency, atol=1e-4) and photo[:20].max() == 0
    assert coverage[30, 30] == 1 and coverage[5, 5] == 0


def test_accumulate_and_windows_by_hand():
    from agekit.explain.occlusion import accumulate, patch_windows

    windows = patch_windows(4, 4)  # 1-px cells, 2x2 patches, 3x3 positions
    assert len(windows) == 9 and windows[0] == (0, 2, 0, 2) and windows[-1] == (2, 4, 2, 4)
    values = np.arange(9, dtype=float)  # window k changes the age by k
    m = accumulate(values, windows, 4)
    assert m[0, 0] == 0 and m[3, 3] == 8  # corners: one window each
    assert m[1, 1] == pytest.approx((0 + 1 + 3 + 4) / 4)  # covered by windows 0, 1, 3, 4
    assert m[0, 1] == pytest.approx((0 + 1) / 2)


def test_delete_pixels_takes_the_most_salient_or_a_random_share():
    from agekit.explain.occlusion import delete_pixels

    crop = np.full((10, 10, 3), 200, np.uint8)
    crop[0, :] = 0  # mean colour: 180
    sal = np.zeros((10, 10))
    sal[5, :] = np.arange(10)  # row 5, increasing to the right
    out = delete_pixels(crop, sal, 0.05)
    changed = np.nonzero((out != crop).any(-1))
    assert list(zip(*changed)) == [(5, 5), (5, 6), (5, 7), (5, 8), (5, 9)] and (out[5, 9] == 180).all()
    rand = delete_pixels(crop, sal, 0.3, rng=np.random.default_rng(0))
    assert ((rand != crop).any(-1) | (crop == 180).all(-1)).sum() >= 1
    assert (rand == 180).all(-1).sum() == 30


def test_bad_options_are_one_line_errors(synthetic):
    from agekit.errors import AgekitError

    with pytest.raises(AgekitError, match="grid"):
        synthetic.explain(textured(48, 48), boxes=[(0, 0, 48, 48)], grid=1)
    with pytest.raises(AgekitError, match="grid must be an integer from 2 to 32"):
        synthetic.explain(textured(48, 48), boxes=[(0, 0, 48, 48)], grid=1000)  # a million copies: refused
    with pytest.raises(AgekitError, match="fill"):
        synthetic.explain(textured(48, 48), boxes=[(0, 0, 48, 48)], fill="noise")


def test_crop_matrix_reproduces_the_estimators_crops():
    from agekit.crop import CropSpec, warp
    from agekit.explain.geometry import crop_matrix
    from agekit.io import load_image
    from agekit.runtime.crops import face_crops

    image = load_image(ASTRONAUT)
    landmarks = np.array([[203.4, 101.6], [247.2, 104.8], [223.3, 125.2], [203.3, 142.4], [241.2, 144.7]])
    for spec in (CropSpec(150, "align", -0.03, 1.0, 0.15), CropSpec(64, "full", 0.4, 1.0, 0.0),
                 CropSpec(64, "full", 0.4, 1.3, 0.0)):
        for kw in ({"landmarks": landmarks}, {"box": (180.0, 58.0, 270.0, 178.0)}, {}):
            crop = face_crops(image, [spec], **kw)[0][0]
            m = crop_matrix(spec, image.shape, **kw)
            diffs = []
            for dx, dy in ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)):  # the matrix, and the window moved 2 px
                moved = m + np.array([[0, 0, dx], [0, 0, dy]])
                warped = warp(image, moved, spec.size)  # one warp (with the pre-shrink against aliasing)
                diffs.append(np.abs(warped.astype(int) - crop.astype(int)).mean())
            # "full" crops are resampled differently (a chip then a resize; an 8x INTER_AREA resize): close, and
            # far closer than the window moved by 2 px
            assert diffs[0] < 8 and diffs[0] < 0.5 * min(diffs[1:]), (spec, kw, diffs)


def test_region_masks_sit_on_the_template_points():
    from agekit.crop import CropSpec, alignment_matrix
    from agekit.explain.geometry import region_masks

    spec = CropSpec(150, "align", -0.03, 1.0, 0.15)
    masks = region_masks(spec)
    # the 5 template points themselves, aligned onto the crop by the crop's own rule
    from agekit.crop import TEMPLATE_112

    m = alignment_matrix(TEMPLATE_112, spec.size, spec.margin, spec.shift)
    pts = TEMPLATE_112 @ m[:, :2].T + m[:, 2]
    for name, idx in (("eyes", 0), ("eyes", 1), ("nose", 2)):
        x, y = pts[idx]
        assert masks[name][int(y), int(x)], (name, x, y)
    assert region_masks(CropSpec(64, "full")) is None


def test_distribution_chart_and_png():
    from agekit.explain.render import distribution_chart, png_bytes

    probs = np.exp(-0.5 * ((np.arange(101) - 40) / 5.0) ** 2)
    chart = distribution_chart(probs / probs.sum(), np.arange(101), 40.0, (32.0, 48.0))
    assert chart.shape == (200, 420, 3) and chart.dtype == np.uint8
    red = (chart[..., 0] > 150) & (chart[..., 1] < 80) & (chart[..., 2] < 80)  # the estimate's line
    cols = np.nonzero(red.any(0))[0]
    x40 = 14 + 40 / 100 * (420 - 14 - 14)
    assert abs(cols.mean() - x40) < 2
    assert png_bytes(chart)[:4] == b"\x89PNG"


def test_explain_path_imports_no_torch():
    code = ("import sys; from agekit import AgeEstimator; import agekit.explain.occlusion, agekit.explain.render; "
            "AgeEstimator('fast').explain(sys.argv[1]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ASTRONAUT)], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- Grad-CAM (torch)

def test_grad_cam_peaks_on_the_region_a_network_reads(torch_one_thread):
    import torch
    from torch import nn

    from agekit.errors import AgekitError
    from agekit.explain.gradcam import check_layers, default_layer, grad_cam

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            mask = torch.zeros(1, 1, 16, 16)
            mask[..., 2:6, 9:13] = 1  # the feature map's cells over the region
            self.register_buffer("mask", mask)

        def forward(self, x):
            return x * self.mask

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, stride=3)  # 48 -> 16
            self.gate = Gate()
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            a = self.gate(torch.relu(self.conv(x)))
            return 30 + self.head(a.mean((2, 3)))

    net = Net()
    crops = textured(2 * S, S).reshape(2, S, S, 3)
    assert default_layer(net, S) == "gate"
    check_layers(net, ["conv", "gate"], S)
    with pytest.raises(AgekitError, match="'head' has no spatial output"):
        check_layers(net, ["gate", "head"], S)
    cams = grad_cam(net, crops)
    assert cams.shape == (2, S, S) and np.isfinite(cams).all() and cams.max() == pytest.approx(1.0)
    for cam in cams:
        y, x = np.unravel_index(cam.argmax(), cam.shape)
        assert 6 <= y < 18 and 27 <= x < 39  # cells 2:6, 9:13 of 3 px
        assert cam[30:, :].max() < 1e-6 and cam[:, :20].max() < 1e-6


def test_grad_cam_through_an_agekit_model_matches_its_decoded_age(torch_one_thread):
    import torch

    from agekit.config import load_config, resolve_config_path
    from agekit.explain.gradcam import expected_age, feature_maps, grad_cam, stage_ends
    from agekit.models.age_model import build_model

    cfg = load_config(resolve_config_path("utkface_light_cnn64_dldlv2"))
    model = build_model(cfg, pretrained=False).eval()
    size = cfg["data"]["crop"]["size"]
    crops = textured(2 * size, size).reshape(2, size, size, 3)
    x = torch.as_tensor(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        decoded = model.method.decode(model(x)["age"]).mean
    assert torch.allclose(expected_age(model, model(x)), decoded)  # the graph is kept, the value is the same
    cams = grad_cam(model, crops)
    assert cams.shape == (2, size, size) and np.isfinite(cams).all() and 0 <= cams.min() and cams.max() <= 1
    layers = stage_ends(model, size)
    maps = feature_maps(model, crops[:1], layers[-1:])
    assert maps[layers[-1]].ndim == 4


# ---------------------------------------------------------------- the CLI and the dataset slice

def test_explain_cli_on_the_example_photo(capsys, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    code = main(["explain", str(ASTRONAUT), str(tmp_path / "missing.jpg"), "--out", str(out), "--model", "fast",
                 "--threads", "1"])
    stdout, err = capsys.readouterr()
    assert code == 1  # one input failed; the good one was explained
    assert "missing.jpg: no such file or folder" in err and "2 files, 1 ok, 1 failed" in err
    assert "astronaut.jpg face 1: age" in stdout
    data = json.loads((out / "explain.json").read_text())
    (face,) = data["faces"]
    assert face["interval"][0] <= face["age"] <= face["interval"][1]
    assert set(face["occlusion"]["region_shares"]) >= {"eyes", "mouth", "forehead"}
    for name in ("photo", "panel", "distribution"):
        with Image.open(out / face["files"][name]) as im:
            assert im.format == "PNG"
    with Image.open(out / face["files"]["photo"]) as im:
        assert im.size == Image.open(ASTRONAUT).size
    maps = np.load(out / face["files"]["maps"])
    assert maps["saliency"].shape == (64, 64) and np.isfinite(maps["saliency"]).all()


def test_explain_cli_never_overwrites_an_input_in_the_out_folder(capsys, tmp_path):
    from PIL import Image

    photo, other = tmp_path / "me.png", tmp_path / "me-face1.png"  # me.png's overlay and me's first panel
    Image.open(ASTRONAUT).save(photo)
    Image.open(ASTRONAUT).transpose(Image.FLIP_LEFT_RIGHT).save(other)
    before = photo.read_bytes(), other.read_bytes()
    code = main(["explain", str(photo), str(other), "--out", str(tmp_path), "--model", "fast", "--threads", "1"])
    capsys.readouterr()
    assert code == 0 and (photo.read_bytes(), other.read_bytes()) == before
    faces = json.loads((tmp_path / "explain.json").read_text())["faces"]
    assert [f["files"]["photo"] for f in faces] == ["me-2.png", "me-face1-2.png"]
    assert [f["files"]["panel"] for f in faces] == ["me-2-face1.png", "me-face1-2-face1.png"]


def test_explain_cli_usage_errors(capsys, tmp_path):
    code = main(["explain", str(ASTRONAUT), "--out", str(tmp_path), "--layers", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("agekit: error:") and "--layers needs --checkpoint" in err
    afile = tmp_path / "file"
    afile.write_text("x")
    code = main(["explain", str(ASTRONAUT), "--out", str(afile)])
    assert code == 2 and "not a folder" in capsys.readouterr().err
    code = main(["explain", str(ASTRONAUT), "--out", str(tmp_path / "never"), "--max-faces", "0"])
    assert code == 2 and "--max-faces must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()  # a usage error writes nothing


def test_deletion_check_and_band_report_on_a_small_slice(utkface_root, tmp_path, synthetic):
    from agekit.explain.bands import run_bands, write_bands

    # two models side by side: the synthetic one (its age depends on one region, so deleting its most
    # salient 10% must move the age more than a random 10%) and the packaged fast model
    result = run_bands([str(synthetic.model.path), "fast"], root=utkface_root, per_band=1, threads=1,
                       progress=False)
    assert list(result["models"]) == ["region", "fast"]
    for m in result["models"].values():
        assert m["n_faces"] == result["protocol"]["found"] >= 4
        d = m["deletion"]
        assert np.isfinite([d["salient_mean"], d["random_mean"], d["difference"]]).all()
        for band in m["bands"].values():
            assert np.isfinite(band["mean_map"]).all() and band["mean_map"].mean() == pytest.approx(1, abs=1e-3)
    d = result["models"]["region"]["deletion"]
    assert d["salient_mean"] > 3 * d["random_mean"] and d["salient_wins"] == 1.0
    assert result["models"]["fast"]["bands"]["adults"]["mean_map"].shape == (64, 64)
    files = write_bands(tmp_path, result)
    md = files["report"].read_text()
    assert "](bands.png)" in md and "](deletion.png)" in md and "| fast | all |" in md
    saved = json.loads(files["json"].read_text())
    assert saved["models"]["fast"]["deletion"]["n"] == result["models"]["fast"]["n_faces"]
