"""agekit predict / check through the CLI: inputs, formats, exit codes and every bad input of issue 5."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from support.cli import run_cli as run
from support.images import png_claiming_size, write_empty, write_text, write_truncated
from support.scenes import noise_scene, paste

from agekit.errors import AgekitError

pytestmark = pytest.mark.torchfree


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chips):
    """A folder of photos in odd formats, each with faces, plus every kind of bad file."""
    try:
        from agekit.detect import create_detector

        create_detector(threads=1)
    except AgekitError as exc:
        pytest.skip(f"default face detector unavailable: {exc}")
    root = tmp_path_factory.mktemp("photos")
    scene = noise_scene(seed=21)
    paste(scene, chips[0], 60, 80, 180)
    paste(scene, chips[1], 360, 120, 150)
    Image.fromarray(scene).save(root / "two_faces.jpg", quality=92)
    single = noise_scene(seed=22, height=300, width=400)
    paste(single, chips[2], 250, 60, 170)                    # cut by the right border
    gray = np.round(single.astype(np.float32) @ [0.299, 0.587, 0.114])
    (root / "formats").mkdir()
    Image.fromarray(gray.astype(np.uint8)).save(root / "formats" / "gray.png")
    Image.fromarray((gray * 257).astype(np.uint16)).save(root / "formats" / "deep16.png")
    Image.fromarray(single).convert("CMYK").save(root / "formats" / "cmyk.jpg")
    Image.fromarray(np.dstack([single, np.full(single.shape[:2], 255, np.uint8)])).save(root / "formats" / "alpha.png")
    bad = root / "bad"
    bad.mkdir()
    write_text(bad / "notes.jpg", "this is not an image\n")
    write_truncated(bad / "truncated.jpg")
    write_empty(bad / "empty.jpg")
    png_claiming_size(bad / "bomb.png", 40000, 40000)
    Image.fromarray(noise_scene(seed=3, height=120, width=160)).save(bad / "no_face.png")
    return root



BAD = {"notes.jpg": "not a readable image", "truncated.jpg": "corrupt or truncated", "empty.jpg": "empty file",
       "bomb.png": "image too large", "no_face.png": "no face found"}


def test_folder_with_good_and_bad_files(tiny, photos, capsys, tmp_path):
    out_file, ann = tmp_path / "res" / "out.json", tmp_path / "annotated"
    code, out, err = run(capsys, "predict", photos, "--model", tiny["onnx"], "--output", "json", "--out", out_file,
                         "--save-annotated", ann, "--threads", 1, "--no-progress")
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == "10 files, 5 ok, 5 failed"
    rows = {r["file"].split("/")[-1]: r for r in json.loads(out_file.read_text())}
    assert len(rows) == 10
    for name, needle in BAD.items():
        assert rows[name]["ok"] is False and needle in rows[name]["error"], name
        assert "\n" not in rows[name]["error"]
    assert len(rows["two_faces.jpg"]["faces"]) == 2
    for name in ("gray.png", "deep16.png", "cmyk.jpg", "alpha.png"):
        faces = rows[name]["faces"]
        x1, _, x2, _ = faces[0]["box"]
        assert len(faces) == 1 and 240 < x1 < 280 and x2 > 350, name      # the face cut by the right border
        assert faces[0]["interval"][0] <= faces[0]["age"] <= faces[0]["interval"][1]
    # annotated copies for the files that worked, mirroring the folder layout; nothing temporary left
    written = sorted(p.relative_to(ann).as_posix() for p in ann.rglob("*") if p.is_file())
    assert written == ["formats/alpha.png", "formats/cmyk.jpg", "formats/deep16.png", "formats/gray.png",
                       "two_faces.jpg"]
    assert Image.open(ann / "two_faces.jpg").size == (640, 480)
    assert not [p for p in (tmp_path / "res").iterdir() if p.name != "out.json"]


def test_each_bad_file_alone_is_one_error_row_and_exit_1(tiny, photos, capsys):
    for name, needle in BAD.items():
        code, out, err = run(capsys, "predict", photos / "bad" / name, "--model", tiny["onnx"], "--threads", 1)
        lines = out.strip().splitlines()
        assert code == 1 and len(lines) == 2 and needle in lines[1] and "error:" in lines[1], name
        assert err.strip() == "1 file, 0 ok, 1 failed" and "Traceback" not in err


def test_table_csv_jsonl_and_missing_paths(tiny, photos, capsys):
    code, out, err = run(capsys, "predict", photos / "two_faces.jpg", "--model", tiny["onnx"], "--threads", 1)
    assert code == 0 and err == ""
    header, *faces = out.strip().splitlines()
    assert header.split()[:4] == ["file", "face", "age", "std"] and "90% interval" in header and len(faces) == 2
    code, out, err = run(capsys, "predict", photos / "two_faces.jpg", photos / "nope.jpg", photos / "none*.png",
                         "--model", tiny["onnx"], "--output", "csv", "--max-faces", 1, "--level", 0.8)
    assert code == 1 and err.strip() == "3 files, 1 ok, 2 failed"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["error"] for r in rows] == ["", "file not found", "no files match this pattern"]
    assert float(rows[0]["lo"]) <= float(rows[0]["age"]) <= float(rows[0]["hi"]) and rows[0]["level"] == "0.8"
    code, out, _ = run(capsys, "predict", photos / "formats", "--model", tiny["onnx"], "--output", "jsonl",
                       "--no-progress")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(docs) == 4 and all(d["ok"] and d["faces"][0]["gender"] for d in docs)


def test_no_detect_and_boxes(tiny, photos, capsys, tmp_path, chips):
    Image.fromarray(chips[0]).save(tmp_path / "chip.jpg")
    code, out, _ = run(capsys, "predict", tmp_path / "chip.jpg", "--no-detect", "--model", tiny["onnx"],
                       "--output", "json")
    face = json.loads(out)[0]["faces"][0]
    assert code == 0 and face["box"] == [0, 0, 200, 200] and face["crop_from"] == "image"
    code, out, _ = run(capsys, "predict", photos / "two_faces.jpg", "--boxes", "60,80,240,260;360,120,510,270",
                       "--model", tiny["onnx"], "--output", "json")
    faces = json.loads(out)[0]["faces"]
    assert code == 0 and [f["box"] for f in faces] == [[60, 80, 240, 260], [360, 120, 510, 270]]
    assert all(f["crop_from"] == "box" and f["landmarks"] is None for f in faces)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("file,x1,y1,x2,y2\ntwo_faces.jpg,60,80,240,260\n")
    code, out, err = run(capsys, "predict", photos / "two_faces.jpg", tmp_path / "chip.jpg", "--boxes", boxes,
                         "--model", tiny["onnx"], "--output", "jsonl")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(docs[0]["faces"]) == 1 and "no box given" in docs[1]["error"]
    for argv, needle in [(["--boxes", "1,2,3"], "neither"), (["--boxes", "10,10,5,50"], "empty"),
                         (["--no-detect", "--boxes", "1,2,3,4"], "not allowed with")]:
        code, out, err = run(capsys, "predict", photos / "two_faces.jpg", "--model", tiny["onnx"], *argv)
        if "empty" in needle:   # a bad box for this image: a per-file error
            assert code == 1 and "empty" in out
        else:
            assert code == 2 and needle in err and "Traceback" not in err


def test_check_answers_over_under_uncertain(tiny, photos, capsys):
    code, out, _ = run(capsys, "check", "--min-age", 0, photos / "two_faces.jpg", "--model", tiny["onnx"],
                       "--output", "json")
    faces = json.loads(out)[0]["faces"]
    assert code == 0 and [f["decision"] for f in faces] == ["over", "over"] and faces[0]["min_age"] == 0
    code, out, _ = run(capsys, "check", "--min-age", 101, photos / "two_faces.jpg", "--model", tiny["onnx"],
                       "--output", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["decision"] for r in rows] == ["under", "under"] and all(float(r["p_over"]) < 0.5 for r in rows)
    code, out, err = run(capsys, "check", "--min-age", 18, photos / "two_faces.jpg", photos / "bad" / "empty.jpg",
                         "--model", tiny["onnx"])
    lines = out.strip().splitlines()
    assert code == 1 and "P(age>=18)" in lines[0] and err.strip() == "2 files, 1 ok, 1 failed"
    for line in lines[1:3]:
        decision, lo_hi = line.split()[2], line.split()[5]
        lo, hi = map(float, lo_hi.split("-"))
        assert decision == ("over" if lo >= 18 else "under" if hi < 18 else "uncertain")


def test_usage_errors_exit_2_and_write_nothing(tiny, photos, capsys, tmp_path):
    out_file = tmp_path / "out.csv"
    for argv, needle in [(["--model", tmp_path / "missing.onnx"], "model file not found"),
                         (["--model", tiny["onnx"], "--level", 1.5], "--level must be between 0 and 1"),
                         (["--model", tiny["onnx"], "--max-faces", 0], "--max-faces must be >= 1"),
                         (["--model", tiny["onnx"], "--detect-size", 8], "--detect-size must be at least 32")]:
        code, out, err = run(capsys, "predict", photos / "two_faces.jpg", "--out", out_file, *argv)
        assert code == 2 and needle in err and err.startswith("agekit: error:") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_detect_size_shrinks_the_photo_before_detection(tiny, photos, capsys):
    # Both faces of the 640x480 scene are 150+ px: still found when it is searched at 320 px, and their
    # boxes come back in the photo's own pixels.
    code, out, _ = run(capsys, "predict", photos / "two_faces.jpg", "--model", tiny["onnx"], "--output", "json",
                       "--detect-size", 320)
    full_code, full_out, _ = run(capsys, "predict", photos / "two_faces.jpg", "--model", tiny["onnx"], "--output",
                                 "json")
    small, full = json.loads(out)[0]["faces"], json.loads(full_out)[0]["faces"]
    assert code == full_code == 0 and len(small) == len(full) == 2
    for a, b in zip(sorted(small, key=lambda f: f["box"][0]), sorted(full, key=lambda f: f["box"][0])):
        assert np.abs(np.array(a["box"]) - np.array(b["box"])).max() < 0.1 * (b["box"][2] - b["box"][0])


def test_folder_is_scored_in_chunks_and_a_bad_file_keeps_its_own_row(tmp_path, capsys, monkeypatch):
    """`agekit predict FOLDER` reads each file alone but scores a chunk's faces in one model call; when that
    call fails on one file, each file is scored alone, so only that file gets an error row and the others
    keep results equal to one-file runs."""
    from pathlib import Path

    from agekit.runtime import AgeEstimator

    photo = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "c.jpg"):
        (folder / name).write_bytes(photo.read_bytes())
    image = Image.open(photo)
    odd_width = image.width // 2
    image.resize((odd_width, image.height // 2)).save(folder / "b.jpg")
    calls = []
    real_batch, real_faces = AgeEstimator.predict_batch, AgeEstimator._faces
    monkeypatch.setattr(AgeEstimator, "predict_batch",
                        lambda self, images, **kw: calls.append(len(images)) or real_batch(self, images, **kw))
    code, out, _ = run(capsys, "predict", str(folder), "--output", "jsonl", "--threads", "1", "--no-progress")
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and calls == [3] and all(rows[n]["ok"] for n in rows)
    alone = AgeEstimator(threads=1).predict(str(photo))[0].age
    assert abs(rows["a.jpg"]["faces"][0]["age"] - alone) < 1e-3 and abs(rows["c.jpg"]["faces"][0]["age"] - alone) < 1e-3

    def failing_on_b(self, image, boxes=None):  # a fault inside the model stage, for one file only
        if image.shape[1] == odd_width:
            raise AgekitError("this file breaks the model stage")
        return real_faces(self, image, boxes)

    monkeypatch.setattr(AgeEstimator, "_faces", failing_on_b)
    code, out, _ = run(capsys, "predict", str(folder), "--output", "jsonl", "--threads", "1", "--no-progress")
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and calls == [3, 3] and rows["a.jpg"]["ok"] and rows["c.jpg"]["ok"]
    assert rows["b.jpg"]["error"] == "this file breaks the model stage"
