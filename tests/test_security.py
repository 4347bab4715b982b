"""Files from elsewhere cannot make agekit run code or read outside what they name: checkpoints are
unpickled with torch's restricted unpickler (agekit.models.restricted_load.load_restricted), and
`--context-dir`'s ages.csv names only files inside its folder (agekit.runtime.context.read_ages_csv)."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from agekit.cli import main
from agekit.errors import AgekitError
from agekit.runtime.context import read_ages_csv

torch = pytest.importorskip("torch")

from agekit.engine.checkpoint import FORMAT, load_model, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronaut.jpg"


class Payload:
    """Pickles as a call of fn(arg): what a booby-trapped checkpoint holds."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def payloads(marker: Path):
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    out = {"exec": Payload(exec, code)}
    if os.name == "posix":
        out["os.system"] = Payload(os.system, f"touch '{marker}'")
    return out


def write_malicious(path: Path, marker: Path, kind: str, legacy: bool, nested: bool) -> Path:
    evil = payloads(marker)[kind]
    payload = {"format": FORMAT, "config": {}, "model": {"w": torch.zeros(2)}, "metrics": {}, "inference": {},
               "state": {"optimizer": {"state": {0: {"step": evil}}}} if nested else {}}
    if not nested:
        payload["hook"] = evil
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


KINDS = ["exec"] + (["os.system"] if os.name == "posix" else [])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("legacy,nested", [(False, False), (True, False), (False, True)])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, kind, legacy, nested):
    marker = tmp_path / "pwned.txt"
    ckpt = write_malicious(tmp_path / "evil.pt", marker, kind, legacy, nested)
    with pytest.raises(AgekitError) as info:
        read_checkpoint(ckpt)
    message = str(info.value)
    assert message.startswith(f"{ckpt}: refused to load") and "\n" not in message
    assert kind.split(".")[-1] in message  # names what it would have called
    with pytest.raises(AgekitError, match="refused to load"):
        load_model(ckpt)
    assert not marker.exists()


def test_the_test_payload_really_runs_code_when_unpickled_unrestricted(tmp_path):
    """The payload above is a real one: torch.load(weights_only=False), what agekit did before, runs it."""
    marker = tmp_path / "pwned.txt"
    ckpt = write_malicious(tmp_path / "evil.pt", marker, "exec", legacy=False, nested=False)
    torch.load(ckpt, map_location="cpu", weights_only=False)
    assert marker.read_text() == "pwned"


def test_cli_refuses_a_malicious_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    ckpt = write_malicious(tmp_path / "evil.pt", marker, "exec", legacy=False, nested=False)
    argvs = [["eval", str(ckpt), "--no-latency", "--no-progress", "--out", str(tmp_path / "ev")]]
    if _has("onnx"):  # without it, export stops earlier (it needs onnx), which test_install checks
        argvs.append(["export", str(ckpt), "--onnx", str(tmp_path / "out.onnx"), "--calibrate", "none"])
    for argv in argvs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"agekit: error: {ckpt}: refused to load") and len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()


def test_fine_tuning_and_pretrained_weights_are_refused_too(tmp_path):
    from agekit.config import load_config
    from agekit.models.age_model import build_model
    from agekit.engine.setup import init_from_checkpoint
    from agekit.models.registry import _read_state_dict

    marker = tmp_path / "pwned.txt"
    ckpt = write_malicious(tmp_path / "evil.pt", marker, "exec", legacy=False, nested=True)
    model = build_model(load_config(None, ["model.backbone=light_cnn64", "data.crop.size=32"]), pretrained=False)
    with pytest.raises(AgekitError, match="refused to load"):
        init_from_checkpoint(model, ckpt, with_head=True)
    weights = tmp_path / "backbone.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(exec, f"open({str(marker)!r}, 'w')")}, weights)
    with pytest.raises(AgekitError, match=r"backbone\.pth: refused to load this weights file"):
        _read_state_dict(weights)
    assert not marker.exists()


def test_a_damaged_file_is_unreadable_not_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage" * 10)
    with pytest.raises(AgekitError, match=r"junk\.pt: not a readable checkpoint"):
        read_checkpoint(junk)


# ---- real checkpoints still load -------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tiny_trained):
    """A real 2-step training run (best.pt: weights only; last.pt: optimiser, scheduler, RNG states)."""
    return tiny_trained["checkpoint"].parent  # shared with tests/test_runtime_export.py


def test_agekit_checkpoints_load_for_eval_export_and_fine_tuning(run):
    from agekit.engine.setup import init_from_checkpoint
    from agekit.runtime import OnnxAgeModel

    for name in ("best.pt", "last.pt"):
        payload = read_checkpoint(run / name)
        assert payload["format"] == FORMAT and payload["inference"]["backbone"] == "light_cnn64"
    model, payload = load_model(run / "best.pt")                          # what agekit eval does
    assert not model.training and payload["metrics"]["step"] == 2
    init_from_checkpoint(model, run / "best.pt", with_head=True)          # train.init_from
    assert OnnxAgeModel(run.parent / "tiny.onnx").meta["checkpoint"]["steps"] == 2  # exported by the fixture


def test_resume_from_a_real_last_checkpoint(run, tmp_path):
    from agekit.config import load_config
    from agekit.engine.trainer import train

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = read_checkpoint(copy / "last.pt")["state"]
    assert {"optimizer", "scheduler", "aug_rng"} <= set(state)
    assert all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in state["aug_rng"])
    cfg = load_config(copy / "config.yaml", [f"run_dir={copy}", "train.max_steps=3"])
    summary = train(cfg, progress=False)
    assert summary["steps"] == 3  # continued from step 2
    assert read_checkpoint(copy / "last.pt")["state"]["step"] == 3


def test_numpy_values_in_older_checkpoints_still_load_and_new_ones_need_no_allow_list(run, tmp_path):
    from agekit.engine.checkpoint import save_checkpoint

    payload = read_checkpoint(run / "last.pt")
    payload["metrics"] = {"val_mae": np.float64(7.25), "step": np.int64(2), "curve": np.arange(3.0)}
    payload["config"]["seed"] = np.int32(0)
    old = tmp_path / "old.pt"
    torch.save(payload, old)                          # as a version that did not convert numpy values
    back = read_checkpoint(old)
    assert back["metrics"]["val_mae"] == 7.25 and list(back["metrics"]["curve"]) == [0.0, 1.0, 2.0]

    model, _ = load_model(run / "best.pt")
    new = tmp_path / "new.pt"
    save_checkpoint(new, model, payload["config"], state=payload["state"], metrics=payload["metrics"])
    plain = torch.load(new, map_location="cpu", weights_only=True)  # torch's own allow-list, nothing added
    assert type(plain["metrics"]["val_mae"]) is float and plain["metrics"]["curve"] == [0.0, 1.0, 2.0]
    assert type(plain["config"]["seed"]) is int


# ---- --context-dir's ages.csv stays inside its folder ------------------------------------------------

def context(tmp_path, rows, photos=("a.jpg",)) -> Path:
    folder = tmp_path / "ctx"
    folder.mkdir(exist_ok=True)
    for name in photos:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE, folder / name)
    (folder / "ages.csv").write_text("\n".join(["file,age", *rows]) + "\n")
    return folder


def test_ages_csv_names_inside_the_folder_are_fine(tmp_path):
    folder = context(tmp_path, ["a.jpg,30", "sub/b.jpg,31", "sub/../c.jpg,32"], photos=("a.jpg", "sub/b.jpg", "c.jpg"))
    assert [(p.name, a) for p, a in read_ages_csv(folder)] == [("a.jpg", 30.0), ("b.jpg", 31.0), ("c.jpg", 32.0)]


def test_ages_csv_names_outside_the_folder_are_refused(tmp_path, capsys):
    outside = tmp_path / "secret.jpg"
    shutil.copy(EXAMPLE, outside)
    folder = context(tmp_path, [])
    (folder / "link.jpg").symlink_to(outside)
    inside_abs = folder / "a.jpg"
    for name, needle in [("../secret.jpg", "is outside"), ("sub/../../secret.jpg", "is outside"),
                         (str(outside), "is an absolute path"), (str(inside_abs), "is an absolute path"),
                         ("link.jpg", "is outside"), ("C:\\Windows\\win.ini", "is an absolute path")]:
        (folder / "ages.csv").write_text(f"file,age\na.jpg,30\n{name},40\n")
        with pytest.raises(AgekitError) as info:
            read_ages_csv(folder)
        message = str(info.value)
        assert message.startswith(f"{folder / 'ages.csv'} line 3: {name}") and needle in message, message
        assert "\n" not in message
    # through the command: one line, before any model or photo is read
    (folder / "ages.csv").write_text("file,age\n../secret.jpg,40\n")
    assert main(["predict", str(EXAMPLE), "--context-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agekit: error:") and "line 2: ../secret.jpg is outside" in err
    assert len(err.strip().splitlines()) == 1


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
