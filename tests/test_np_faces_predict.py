"""Personalised prediction with the ONNX runtime on real FG-NET photos (skipped without ../shared/data/FGNET):
`AgeEstimator.predict(..., context=[(image, age), ...])` and `agekit predict --context-dir DIR`, with the
face NP bank made by `agekit np-bank` from the ONNX model; bad context folders and missing banks."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from agekit.cli import main
from agekit.errors import AgekitError

BANK_SUBJECTS = ["001", "002", "003", "004", "005", "006"]
PERSON = "011"  # not in the bank


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def setup(fgnet_root, tmp_path_factory):
    """The committed tiny model (tests/data/tiny-age.onnx), its bank beside it, and photos of one FG-NET
    subject who is not in the bank."""
    pytest.importorskip("onnxruntime")
    from support.models import copy_tiny_model as tiny_model

    base = tmp_path_factory.mktemp("np_predict")
    paths = tiny_model(base / "model")
    onnx = paths["onnx"]
    bank = onnx.with_name(onnx.stem + ".np.npz")
    assert main(["np-bank", "--checkpoint", str(onnx), "--data", str(fgnet_root), "--out", str(bank),
                 "--subjects", ",".join(BANK_SUBJECTS)]) == 0
    photos = sorted((fgnet_root / "images").glob(f"{PERSON}A*.JPG"))
    ages = [int(p.stem[4:6]) for p in photos]
    return {"onnx": onnx, "bank": bank, "photos": photos, "ages": ages, "base": base}


def test_bank_is_found_beside_the_model_and_matches_it(setup):
    from agekit.runtime.face_np import FaceNP

    bank = FaceNP.load(setup["bank"])
    assert bank.meta["encoder"]["kind"] == "onnx"
    assert list(bank.subjects) == BANK_SUBJECTS


def test_estimator_predict_with_context(setup):
    from agekit.runtime import AgeEstimator

    est = AgeEstimator(model=setup["onnx"])
    photos, ages = setup["photos"], setup["ages"]
    plain = est.predict(photos[-1])
    assert plain and plain[0].personalised is None and "personalised" not in plain[0].to_dict()
    context = list(zip(photos[:4], ages[:4]))
    faces = est.predict(photos[-1], context=context)
    assert len(faces) == len(plain)
    f = faces[0]
    assert f.personalised is True and f.base_age == pytest.approx(plain[0].age)
    assert f.interval[0] <= f.age <= f.interval[1]
    assert any("personalised with 4 context photo(s) (encoder+residual)" in n for n in f.notes)
    d = f.to_dict()
    assert d["personalised"] is True and d["base_age"] is not None and d["notes"]
    # a prepared context gives the same answer, and serves predict_batch and predict_crops
    ctx = est.context(context)
    again = est.predict(photos[-1], context=ctx)
    assert again[0].age == pytest.approx(f.age)
    batch = est.predict_batch([photos[-1], photos[-2]], context=ctx)
    assert batch[0][0].age == pytest.approx(f.age) and batch[1][0].personalised


def test_context_photo_without_a_face_is_skipped_with_a_note(setup, tmp_path):
    from agekit.runtime import AgeEstimator

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(blank)
    est = AgeEstimator(model=setup["onnx"])
    faces = est.predict(setup["photos"][-1], context=[(blank, 30)])
    f = faces[0]
    assert f.personalised is False
    assert any("blank.png: no face found" in n for n in f.notes)
    assert any("non-personal estimate" in n for n in f.notes)
    assert f.age == f.base_age and f.interval == est.predict(setup["photos"][-1])[0].interval  # the model's own


def test_personalised_prediction_imports_no_torch(setup):
    import subprocess
    import sys

    photos, ages = setup["photos"], setup["ages"]
    code = ("import sys\n"
            "from agekit.runtime import AgeEstimator\n"
            f"est = AgeEstimator(model=r'{setup['onnx']}')\n"
            f"context = [(r'{photos[0]}', {ages[0]}), (r'{photos[1]}', {ages[1]})]\n"
            f"faces = est.predict(r'{photos[-1]}', context=context)\n"
            "assert faces and faces[0].personalised\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_estimator_context_errors(setup, tmp_path):
    from agekit.runtime import AgeEstimator

    est = AgeEstimator(model=setup["onnx"])
    photo = setup["photos"][0]
    with pytest.raises(AgekitError, match="outside 0-120"):
        est.predict(photo, context=[(photo, 150)])
    with pytest.raises(AgekitError, match="not a number"):
        est.predict(photo, context=[(photo, "ten")])
    with pytest.raises(AgekitError, match=r"\(image_or_path, age\) pair"):
        est.predict(photo, context=[photo])
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(setup["onnx"], lonely)
    with pytest.raises(AgekitError, match="agekit np-bank"):
        AgeEstimator(model=lonely).predict(photo, context=[(photo, 10)])


def _context_dir(setup, tmp_path, rows, copy=None):
    folder = tmp_path / "ctx"
    folder.mkdir()
    for p in copy if copy is not None else setup["photos"][:3]:
        shutil.copy(p, folder / p.name)
    (folder / "ages.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_cli_predict_with_context_dir(setup, tmp_path, capsys):
    photos, ages = setup["photos"], setup["ages"]
    folder = _context_dir(setup, tmp_path, ["file,age"] + [f"{p.name},{a}" for p, a in zip(photos[:3], ages[:3])])
    code = main(["predict", str(photos[-1]), str(photos[-2]), "--model", str(setup["onnx"]), "--context-dir",
                 str(folder), "--output", "json", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0
    records = json.loads(out)
    assert len(records) == 2 and all(r["ok"] for r in records)
    face = records[0]["faces"][0]
    assert face["personalised"] is True and face["base_age"] is not None
    assert "context: personalised with 3 context photo(s) (encoder+residual)" in err
    # same formats as plain predict
    assert main(["predict", str(photos[-1]), "--model", str(setup["onnx"]), "--context-dir", str(folder),
                 "--output", "csv"]) == 0
    assert capsys.readouterr().out.startswith("file,face,age,")


@pytest.mark.parametrize("rows,match", [
    (["file,age", "missing.jpg,10"], "missing.jpg not found"),
    (["file,age", "{0},ten"], "not a number"),
    (["file,age", "{0},150"], "outside 0-120"),
    (["file,age", "{0},10", "{0},12"], "listed twice"),
    (["name,years", "{0},10"], "must name the columns file,age"),
    (["file,age"], "no photos listed"),
])
def test_cli_context_dir_validation(setup, tmp_path, capsys, rows, match):
    name = setup["photos"][0].name
    folder = _context_dir(setup, tmp_path, [r.format(name) for r in rows])
    code = main(["predict", str(setup["photos"][-1]), "--model", str(setup["onnx"]), "--context-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "ages.csv" in err


def test_cli_context_dir_missing(setup, tmp_path, capsys):
    assert main(["predict", str(setup["photos"][-1]), "--model", str(setup["onnx"]), "--context-dir",
                 str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(setup["photos"][-1]), "--model", str(setup["onnx"]), "--context-dir",
                 str(tmp_path / "empty")]) == 2
    assert "no ages.csv" in capsys.readouterr().err
