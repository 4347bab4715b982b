import pytest

from agekit.config import DEFAULTS, load_config, packaged_configs, parse_override
from agekit.errors import AgekitError


def test_overrides_parse_yaml_values():
    assert parse_override("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    assert parse_override("model.pretrained=false") == {"model": {"pretrained": False}}
    assert parse_override("model.mean=[0.5,0.5,0.5]") == {"model": {"mean": [0.5, 0.5, 0.5]}}


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  lr: 1e-2\n  epochs: 3\nmethod:\n  params: {sigma: 3}\n")
    cfg = load_config(path, ["train.epochs=5", "method.params.lam=0.5"])
    assert cfg["name"] == "x" and cfg["train"]["lr"] == 0.01 and cfg["train"]["epochs"] == 5
    assert cfg["method"]["params"] == {"sigma": 3, "lam": 0.5}
    assert cfg["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]


@pytest.mark.parametrize("override,message", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("train.epochs=0", "train.epochs"),
    ("train=3", "must be a mapping"),
    ("data.age_min=50", "age_min"),
    ("nonsense", "key.sub=value"),
])
def test_bad_config_is_one_line_error(override, message):
    with pytest.raises(AgekitError, match=message):
        load_config(None, [override, "data.age_max=40"] if "age_min" in override else [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(AgekitError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(AgekitError, match="invalid YAML"):
        load_config(bad)


@pytest.mark.parametrize("name", sorted(packaged_configs()))
def test_every_packaged_config_loads_and_validates(name):
    cfg = load_config(packaged_configs()[name])  # raises AgekitError on an unknown key or a bad value
    assert cfg["name"] and cfg["data"]["dataset"] in ("utkface", "fgnet")


def test_bench_full_protocol_differs_from_bench_cpu_only_in_budget():
    configs = packaged_configs()
    small, full = load_config(configs["bench_cpu"]), load_config(configs["bench_cpu_full"])
    assert small["data"]["limit_train"] == 3840 and full["data"]["limit_train"] is None
    assert full["data"]["limit_eval"] is None and full["train"]["epochs"] == 3
    for key in ("model", "gender", "augment"):
        assert small[key] == full[key]
    same = ("batch_size", "optimizer", "lr", "weight_decay", "scheduler", "warmup_epochs")
    assert {k: small["train"][k] for k in same} == {k: full["train"][k] for k in same}
    assert small["data"]["crop"] == full["data"]["crop"] and small["data"]["split"] == full["data"]["split"]


def test_default_recipe_uses_dlib_input_layer_and_chip_window():
    """agekit_default.yaml writes dlib's constants by hand (YAML cannot import them): they must agree."""
    from agekit.models.dlib_resnet import DLIB_CHIP_CROP, DLIB_MEAN, DLIB_STD

    cfg = load_config(packaged_configs()["agekit_default"])
    assert cfg["model"]["backbone"] == "dlib_resnet_face"
    assert cfg["model"]["mean"] == pytest.approx(DLIB_MEAN, abs=1e-6)
    assert cfg["model"]["std"] == pytest.approx(DLIB_STD, abs=1e-6)
    crop = cfg["data"]["crop"]
    assert (crop["size"], crop["rule"], crop["margin"], crop["shift"]) == (
        DLIB_CHIP_CROP.size, DLIB_CHIP_CROP.rule, DLIB_CHIP_CROP.margin, DLIB_CHIP_CROP.shift)
    # the FG-NET test subjects of the development split never join training
    extra = cfg["data"]["extra_datasets"]
    assert extra == [{"dataset": "fgnet", "split": {"kind": "file", "file": "fgnet_dev_v1"}, "repeat": 4}]
