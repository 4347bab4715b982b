"""Backbone registry: smoke tests over every registered backbone, pooling, local and hub weights.

Every backbone runs at 64x64 (the project's working size; vit_tiny needs a multiple of 16, which 64 is).
"""
from __future__ import annotations

import pytest
import torch

from agekit.errors import AgekitError
from agekit.models import GlobalPool, backbone_info, create_backbone, list_backbones, register_backbone
from agekit.models import registry

SIZE = 64
SMALL = ["thinagenet", "tinyagenet", "light_cnn64", "light_cnn64_deep", "light_cnn160", "light_cnn160_deep"]
TIMM = ["resnet18", "resnet34", "resnet50", "mobilenetv3_small", "mobilenetv3_large", "efficientnet_b0",
        "convnext_atto", "convnext_tiny", "swin_tiny", "vit_tiny"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batches of 2 gain nothing from intra-op threads. Without oneDNN bf16 (pre-AVX512 CPUs) a bf16
    depthwise conv runs one OpenMP region per channel, and on a busy 2-core machine the spinning barriers
    stretch a ConvNeXt step from seconds to minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(size: int = SIZE) -> torch.Tensor:
    return torch.randn(2, 3, size, size)


def test_every_expected_backbone_is_registered():
    assert set(SMALL + TIMM) <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


def _assert_features_and_grads(model: torch.nn.Module, out: torch.Tensor) -> None:
    assert out.shape == (2, model.num_features)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", list_backbones())
def test_forward_backward(name):
    model = create_backbone(name, in_size=SIZE)
    _assert_features_and_grads(model, model(_batch()))
    info = backbone_info(name)
    assert info["default_input_size"] == model.default_input_size
    assert info["description"] and info["paper"]


@pytest.mark.parametrize("name", list_backbones())
def test_channels_last(name):
    model = create_backbone(name, in_size=SIZE).to(memory_format=torch.channels_last)
    _assert_features_and_grads(model, model(_batch().to(memory_format=torch.channels_last)))


@pytest.mark.parametrize("name", list_backbones())
def test_channels_last_bf16_autocast(name):
    model = create_backbone(name, in_size=SIZE).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_batch().to(memory_format=torch.channels_last))
    _assert_features_and_grads(model, out)


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [32, 45])
def test_small_nets_take_any_size_from_32(name, size):
    model = create_backbone(name, in_size=size).eval()
    assert model(_batch(size)).shape == (2, model.num_features)


def test_timm_escape_hatch_builds_fixed_size_transformers_for_in_size():
    model = create_backbone("timm:deit_tiny_patch16_224", in_size=SIZE)
    assert model(_batch()).shape == (2, model.num_features) == (2, 192)
    assert backbone_info("timm:resnet10t")["default_input_size"] == 176
    with pytest.raises(AgekitError, match="unknown timm model"):
        create_backbone("timm:no_such_model")


def test_avgmax_is_mean_of_global_max_and_avg():
    # channel 0 holds 0..3 (avg 1.5, max 3); channel 1 holds -4, 0, 0, 8 (avg 1, max 8)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[-4.0, 0.0], [0.0, 8.0]]]])
    assert torch.equal(GlobalPool("avg")(x), torch.tensor([[1.5, 1.0]]))
    assert torch.equal(GlobalPool("max")(x), torch.tensor([[3.0, 8.0]]))
    assert torch.equal(GlobalPool("avgmax")(x), torch.tensor([[2.25, 4.5]]))


@pytest.mark.parametrize("name", ["tinyagenet", "resnet18"])
def test_avgmax_backbone_pools_its_feature_map(name):
    """Small nets use agekit's GlobalPool, timm CNNs timm's head pooling: both give 0.5 * (avg + max)."""
    model = create_backbone(name, pool="avgmax").eval()
    x = _batch()
    with torch.no_grad():
        fmap = model.features(x) if name == "tinyagenet" else model.forward_features(x)
        expected = 0.5 * (fmap.mean((2, 3)) + fmap.amax((2, 3)))
        torch.testing.assert_close(model(x), expected)


def test_bad_options_are_agekit_errors():
    with pytest.raises(AgekitError, match="unknown backbone 'nope'.*resnet18"):
        create_backbone("nope")
    with pytest.raises(AgekitError, match="unknown pool"):
        create_backbone("light_cnn64", pool="sum")
    with pytest.raises(AgekitError, match="in_size"):
        create_backbone("light_cnn64", in_size=16)
    with pytest.raises(AgekitError, match="pool=avgmax needs a CNN backbone"):
        create_backbone("vit_tiny", pool="avgmax")
    with pytest.raises(AgekitError, match="no downloadable weights"):
        create_backbone("thinagenet", pretrained=True)
    with pytest.raises(AgekitError, match="pretrained must be"):
        create_backbone("thinagenet", pretrained=1)
    assert create_backbone("light_cnn64", pretrained=None).num_features == 256  # empty YAML entry


def test_register_backbone(monkeypatch):
    monkeypatch.setattr(registry.BACKBONES, "_entries", dict(registry.BACKBONES._entries))

    @register_backbone("toy", default_input_size=32, description="toy", paper="none")
    def toy(*, in_size, pool):
        return GlobalPool(pool)

    assert "toy" in list_backbones()
    assert backbone_info("toy")["default_input_size"] == 32
    assert create_backbone("toy", in_size=32).default_input_size == 32
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("toy")(toy)


def _save(state: dict, path, fmt: str):
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "module_prefix_nested":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif fmt == "nested_model":
        torch.save({"model": state, "optimizer": {}}, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize("fmt", ["plain", "module_prefix_nested", "nested_model", "safetensors"])
@pytest.mark.parametrize("name", ["tinyagenet", "mobilenetv3_small"])
def test_local_weights_round_trip(tmp_path, name, fmt):
    source = create_backbone(name).eval()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    _save(source.state_dict(), path, fmt)
    torch.manual_seed(1)  # a different random init, so equal outputs prove the weights were loaded
    loaded = create_backbone(name, pretrained=str(path)).eval()
    x = _batch()
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_timm_checkpoint_with_classifier_loads(tmp_path):
    """A checkpoint fetched from the hub by hand keeps its classifier; the backbone ignores those keys."""
    import timm
    full = timm.create_model("resnet18", num_classes=1000).eval()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(full.state_dict(), path)
    backbone = create_backbone("resnet18", pretrained=path).eval()
    x = _batch()
    with torch.no_grad():
        assert torch.equal(backbone(x), full.forward_head(full.forward_features(x), pre_logits=True))


def test_weights_of_another_architecture_name_the_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(create_backbone("tinyagenet").state_dict(), path)
    with pytest.raises(AgekitError, match=r"tiny\.pth.*shape mismatch") as err:
        create_backbone("thinagenet", pretrained=path)
    assert "\n" not in str(err.value)
    with pytest.raises(AgekitError, match=r"tiny\.pth.*missing keys: .*unexpected keys: "):
        create_backbone("light_cnn64_deep", pretrained=path)


def test_missing_or_unreadable_weights_file(tmp_path):
    with pytest.raises(AgekitError, match=r"nowhere\.pth: weights file not found"):
        create_backbone("tinyagenet", pretrained=tmp_path / "nowhere.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AgekitError, match=r"junk\.pth: not a readable weights file"):
        create_backbone("tinyagenet", pretrained=junk)
    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1}, not_tensors)
    with pytest.raises(AgekitError, match=r"config\.pth: no state_dict"):
        create_backbone("tinyagenet", pretrained=not_tensors)


def test_hub_download_offline_is_an_agekit_error(monkeypatch):
    import timm.models._hub as timm_hub

    def offline(*args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(timm_hub, "hf_hub_download", offline)
    with pytest.raises(AgekitError, match="no internet: pass a local weights file with pretrained=PATH"):
        create_backbone("resnet18", pretrained=True)
