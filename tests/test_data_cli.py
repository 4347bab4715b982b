"""`agekit data info` and `agekit data verify` through agekit.cli.main, on fake datasets."""
import json
import subprocess
import sys
from pathlib import Path

import support.datasets as fx
from agekit.cli import main
from agekit.data.inspect import POOL_MIN_IMAGES, decade_histogram

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def make_clean_utkface(tmp_path, n=3):
    root = tmp_path / "clean"
    for i in range(n):
        fx.write_image(root / f"{20 + i % 50}_{i % 2}_{i % 5}_2017010{i % 10}000000{i:03d}.jpg.chip.jpg", seed=i)
    return root


def test_info_text_report(tmp_path, capsys):
    code, out, _ = run(capsys, "info", fx.make_utkface(tmp_path))
    assert code == 0
    assert "dataset    utkface" in out
    assert "images     7" in out
    assert "age        min 3  mean 41.0  median 40  max 70" in out  # 25 39 3 40 70 50 60
    assert "0-9  #" in out and "70-79  #" in out
    assert "male 3 (42.9%)  female 4 (57.1%)  unknown 0" in out
    assert "race       White 1  Black 2  Asian 1  Indian 1  Others 1" in out
    assert "skipped    3" in out and "holiday_photo.jpg: name does not match" in out
    assert "unreadable" not in out  # images are only decoded with --check-images


def test_info_json_and_check_images(tmp_path, capsys):
    code, out, _ = run(capsys, "info", fx.make_utkface(tmp_path), "--json", "--check-images")
    assert code == 0
    summary = json.loads(out)
    assert summary["dataset"] == "utkface" and summary["images"] == 7
    assert summary["age"] == {"min": 3.0, "mean": 41.0, "median": 40.0, "max": 70.0}
    assert summary["gender"] == {"male": 3, "female": 4, "unknown": 0}
    assert summary["race"]["Black"] == 2 and summary["subjects"] is None
    assert summary["skipped"] == 3
    assert summary["unreadable"] == 2
    bad = {Path(path).name: reason for path, reason in summary["unreadable_examples"]}
    assert bad == {fx.UTK_EMPTY: "empty file (0 bytes)", fx.UTK_TRUNCATED: bad[fx.UTK_TRUNCATED]}
    assert "truncated" in bad[fx.UTK_TRUNCATED]


def test_info_with_explicit_dataset_shows_subjects_and_landmarks(tmp_path, capsys):
    code, out, _ = run(capsys, "info", fx.make_fgnet(tmp_path), "--dataset", "fgnet")
    assert code == 0
    assert "subjects   3" in out and "landmarks  3 images" in out and "gender     not labelled" in out


def test_decade_histogram_keeps_empty_decades():
    assert decade_histogram([3, 35, 35.5, 120]) == [
        {"bin": f"{d}-{d + 9}", "count": c} for d, c in zip(range(0, 130, 10), [1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1])]
    assert decade_histogram([]) == []


def test_verify_lists_bad_entries_and_exits_1(tmp_path, capsys):
    root = fx.make_utkface(tmp_path)
    code, out, _ = run(capsys, "verify", root)
    assert code == 1
    lines = out.strip().splitlines()
    assert f"{root / fx.UTK_EMPTY}: empty file (0 bytes)" in lines
    assert any(line.startswith(f"{root / fx.UTK_TRUNCATED}: corrupt or truncated") for line in lines)
    assert f"{root / 'holiday_photo.jpg'}: name does not match age_gender_race_date.jpg" in lines
    assert lines[-1] == "utkface: 10 entries, 5 good, 3 unparseable, 2 unreadable"


def test_verify_clean_dataset_exits_0(tmp_path, capsys):
    code, out, _ = run(capsys, "verify", make_clean_utkface(tmp_path))
    assert code == 0
    assert out.strip() == "utkface: 3 entries, 3 good, 0 unparseable, 0 unreadable"


def test_verify_with_worker_pool_finds_a_corrupt_file(tmp_path, capsys):
    root = make_clean_utkface(tmp_path, n=POOL_MIN_IMAGES + 10)  # enough images to use the process pool
    broken = sorted(root.iterdir())[POOL_MIN_IMAGES // 2]
    fx.write_truncated(broken)
    code, out, _ = run(capsys, "verify", root, "--workers", "2")
    assert code == 1
    assert out.splitlines()[0].startswith(f"{broken}: corrupt or truncated")
    assert out.strip().endswith(f"{POOL_MIN_IMAGES + 9} good, 0 unparseable, 1 unreadable")


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    for action in ("info", "verify"):
        code, out, err = run(capsys, action, tmp_path / "nowhere")
        assert code == 2 and out == ""
        assert err == f"agekit: error: dataset folder not found: {tmp_path / 'nowhere'}\n"


def test_empty_folder_and_unknown_layout_are_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "info", tmp_path / "empty")
    assert code == 2 and "dataset folder is empty" in err and "Traceback" not in err
    fx.write_image(tmp_path / "photos" / "IMG_0001.jpg")
    code, _, err = run(capsys, "verify", tmp_path / "photos")
    assert code == 2 and "cannot tell which dataset" in err and "--dataset" in err
    assert len(err.strip().splitlines()) == 1


def test_real_fgnet_info(fgnet_root, capsys):
    code, out, _ = run(capsys, "info", fgnet_root)
    assert code == 0 and "images     759" in out and "subjects   62" in out


def test_commands_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import agekit.commands.data, agekit.data.inspect"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
