"""`agekit predict` never loses or destroys a user's data, and takes inputs as they come.

--out rules (a device or FIFO is written into, a symlink written through, a file replaced atomically), outputs
checked before any image is read, inputs never overwritten, streamed rows with --resume and Ctrl-C, memory
flat over a batch, globs over link loops, HEIC, permission errors, one pixel limit, URLs and stdin, detector
usage errors. Every bad input is built here; images are tiny and most runs use --no-detect.
"""
from __future__ import annotations

import csv
import ctypes
import http.server
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from support.cli import run_cli as run
from support.images import png_claiming_size

import agekit.io

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.torchfree


def png(path: Path, seed: int = 0, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def reads(monkeypatch):
    """Every image the CLI reads, by name: usage errors must come before the first."""
    seen = []
    real = agekit.io.read_image

    def spy(source, name=None, **kw):
        seen.append(name)
        return real(source, name=name, **kw)

    monkeypatch.setattr(agekit.io, "read_image", spy)
    return seen


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(3):
        png(folder / f"p{i}.png", seed=i)
    return folder


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agekit: error:") and "Traceback" not in err, err
    return lines[0]


# ---- --out: devices, FIFOs, symlinks, files ---------------------------------------------------------------
def _restore_dev_null():
    st = os.lstat("/dev/null")
    if not stat.S_ISCHR(st.st_mode):  # only if a regression replaced it: put the device back
        os.unlink("/dev/null")
        os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)


def test_dev_null_as_out_stays_a_character_device(photos, capsys):
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("/dev/null is not a character device here")
    try:
        for fmt in ("jsonl", "table"):
            code, out, err = run(capsys, "predict", photos, "--no-detect", "--output", fmt, "--out", "/dev/null",
                                 "--no-progress")
            assert code == 0 and out == "" and "3 files, 3 ok, 0 failed" in err
            st = os.lstat("/dev/null")
            assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    finally:
        if os.geteuid() == 0:
            _restore_dev_null()


def test_fifo_as_out_is_written_into_not_replaced(photos, tmp_path, capsys):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got = []

    def reader():
        with open(fifo, "rb") as fh:  # blocks until agekit opens it for writing
            got.append(fh.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        code, out, _ = run(capsys, "predict", photos, "--no-detect", "--output", "jsonl", "--out", fifo,
                             "--no-progress")
    finally:
        thread.join(timeout=10)
        if thread.is_alive():  # agekit never opened it: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(timeout=5)
    assert code == 0 and out == ""
    rows = [json.loads(line) for line in got[0].decode().splitlines()]
    assert sorted(Path(r["file"]).name for r in rows) == ["p0.png", "p1.png", "p2.png"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_as_out_is_written_through_and_stays_a_link(photos, tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    real = store / "results.csv"
    real.write_text("old results\n")
    real.chmod(0o640)
    link = tmp_path / "results.csv"
    link.symlink_to(real)
    code, out, _ = run(capsys, "predict", photos, "--no-detect", "--output", "csv", "--out", link, "--no-progress")
    assert code == 0 and out == ""
    assert link.is_symlink() and os.readlink(link) == str(real)
    rows = list(csv.DictReader(io.StringIO(real.read_text())))
    assert len(rows) == 3 and stat.S_IMODE(real.stat().st_mode) == 0o640  # replaced, permissions kept
    assert sorted(p.name for p in store.iterdir()) == ["results.csv"]      # no temporary file left
    dangling = tmp_path / "new.jsonl"
    dangling.symlink_to(store / "made.jsonl")
    code, _, _ = run(capsys, "predict", photos / "p0.png", "--no-detect", "--output", "jsonl", "--out", dangling)
    assert code == 0 and dangling.is_symlink() and json.loads((store / "made.jsonl").read_text())["ok"]
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    code, _, err = run(capsys, "predict", photos, "--no-detect", "--out", loop)
    assert code == 2 and "symbolic link loop" in one_error_line(err) and loop.is_symlink()


def test_a_full_disk_stops_with_one_line(photos, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    code, _, err = run(capsys, "predict", photos, "--no-detect", "--output", "jsonl", "--out", "/dev/full",
                         "--no-progress")
    assert code == 2 and "No space left on device" in one_error_line(err)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_out_dash_is_stdout(photos, capsys):
    code, out, _ = run(capsys, "predict", photos / "p1.png", "--no-detect", "--output", "json", "--out", "-")
    assert code == 0 and json.loads(out)[0]["ok"] is True


def test_bad_out_is_refused_before_any_image_is_read(photos, tmp_path, capsys, reads):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("keep me\n")
    for out, needle in [(tmp_path, "is a folder"), (a_file / "out.jsonl", "is a file, not a folder"),
                        (photos / "p0.png", "is the input file")]:
        code, stdout, err = run(capsys, "predict", photos, "--no-detect", "--output", "jsonl", "--out", out)
        assert code == 2 and stdout == "" and needle in one_error_line(err), (out, err)
    assert reads == [] and a_file.read_text() == "keep me\n"
    assert Image.open(photos / "p0.png").size == (16, 16)


# ---- inputs are never overwritten; annotated names never collide -------------------------------------------
def test_save_annotated_into_the_input_folder_is_refused(photos, capsys, reads):
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    code, out, err = run(capsys, "predict", photos, "--no-detect", "--save-annotated", photos)
    line = one_error_line(err)
    assert code == 2 and out == "" and "would overwrite the input file" in line and reads == []
    nested = photos / "deeper"
    png(nested / "p0.jpeg", seed=9)  # -> p0.jpg in the same folder: not an input, but p0.png is
    code, _, err = run(capsys, "predict", photos, "--no-detect", "--save-annotated", photos)
    assert code == 2 and reads == []
    assert {p.name: p.read_bytes() for p in photos.iterdir() if p.is_file()} == before


def test_annotated_names_that_collide_are_told_apart(tmp_path, capsys):
    a, b = png(tmp_path / "a" / "x.jpg", 1), png(tmp_path / "b" / "x.jpg", 2)
    c = png(tmp_path / "a" / "x.jpeg", 3)
    png(tmp_path / "tree" / "one" / "x.png", 4)
    png(tmp_path / "tree" / "two" / "x.png", 5)
    ann = tmp_path / "ann"
    code, _, err = run(capsys, "predict", a, b, c, tmp_path / "tree", "--no-detect", "--save-annotated", ann,
                       "--output", "jsonl", "--no-progress")
    assert code == 0, err
    written = sorted(p.relative_to(ann).as_posix() for p in ann.rglob("*") if p.is_file())
    assert written == ["one/x.png", "two/x.png", "x-2.jpg", "x-3.jpg", "x.jpg"]


# ---- streaming, interruption, --resume -----------------------------------------------------------------
def test_resume_after_a_killed_run_appends_only_what_is_missing(tmp_path, capsys):
    folder = tmp_path / "batch"
    for i in range(8):
        png(folder / f"{i}.png", seed=i)
    out = tmp_path / "res.jsonl"
    code, _, _ = run(capsys, "predict", folder, "--no-detect", "--output", "jsonl", "--out", out, "--no-progress")
    full = out.read_text().splitlines(keepends=True)
    assert code == 0 and len(full) == 8
    out.write_text("".join(full[:3]) + full[3][:25])  # killed while writing the 4th row
    code, _, err = run(capsys, "predict", folder, "--no-detect", "--output", "jsonl", "--out", out, "--resume",
                       "--no-progress")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    files = [r["file"] for r in rows]
    assert code == 0 and len(files) == 8 == len(set(files)) and files[:3] == [json.loads(x)["file"] for x in full[:3]]
    assert "5 files, 5 ok, 0 failed" in err and "3 already in" in err
    code, _, err = run(capsys, "predict", folder, "--no-detect", "--output", "jsonl", "--out", out, "--resume")
    assert code == 0 and len(out.read_text().splitlines()) == 8 and "0 files" in err
    # CSV: the header is kept, rows appended
    out_csv = tmp_path / "res.csv"
    run(capsys, "predict", folder, "--no-detect", "--output", "csv", "--out", out_csv, "--no-progress")
    lines = out_csv.read_text().splitlines(keepends=True)
    out_csv.write_text("".join(lines[:4]))
    code, _, _ = run(capsys, "predict", folder, "--no-detect", "--output", "csv", "--out", out_csv, "--resume",
                     "--no-progress")
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert code == 0 and len(rows) == 8 == len({r["file"] for r in rows})
    # another command's CSV, or not agekit's JSONL: refused, untouched
    code, _, err = run(capsys, "check", "--min-age", 18, folder, "--no-detect", "--output", "csv", "--out", out_csv,
                       "--resume")
    assert code == 2 and "other columns" in one_error_line(err) and len(out_csv.read_text().splitlines()) == 9
    notes = tmp_path / "notes.jsonl"
    notes.write_text("[1, 2]\n")
    code, _, err = run(capsys, "predict", folder, "--no-detect", "--output", "jsonl", "--out", notes, "--resume")
    assert code == 2 and "line 1" in one_error_line(err) and notes.read_text() == "[1, 2]\n"
    code, _, err = run(capsys, "predict", folder, "--no-detect", "--out", out, "--resume")
    assert code == 2 and "--resume needs" in one_error_line(err)


def test_file_names_that_are_not_utf8_round_trip(tmp_path, capsys):
    folder = tmp_path / "old disk"
    png(folder / "plain.png")
    png(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png")), 1)  # Latin-1 bytes in the name
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"res.{fmt}"
        code, _, _ = run(capsys, "predict", folder, "--no-detect", "--output", fmt, "--out", out, "--no-progress")
        lines = out.read_bytes().splitlines(keepends=True)
        assert code == 0 and any(b"caf\xe9.png" in line or b"caf\\udce9.png" in line for line in lines)
        out.write_bytes(b"".join(lines[:-1]))  # the last row lost
        code, _, err = run(capsys, "predict", folder, "--no-detect", "--output", fmt, "--out", out, "--resume",
                           "--no-progress")
        assert code == 0 and "1 file, 1 ok" in err and out.read_bytes().splitlines(keepends=True) == lines
    code, out, _ = run(capsys, "predict", folder, "--no-detect", "--no-progress")  # the table on stdout
    assert code == 0 and len(out.splitlines()) == 3


SLOW_DRIVER = r"""
import sys, time
import agekit.runtime.scoring as scoring
real = scoring._predict_one
def slow(*a, **k):
    time.sleep(0.02)
    return real(*a, **k)
scoring._predict_one = slow
from agekit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _interrupt(argv, watch: Path, rows: int, sig) -> subprocess.CompletedProcess:
    """Run agekit (20 ms a file) in a subprocess; send `sig` once `watch` (a glob) holds `rows` lines."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DRIVER, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(watch.parent.glob(watch.name))
            if files and files[0].read_text().count("\n") >= rows:
                break
            time.sleep(0.01)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_and_sigterm_write_what_is_done(tmp_path, capsys):
    folder = tmp_path / "batch"
    for i in range(60):
        png(folder / f"{i:02d}.png", seed=i)
    out = tmp_path / "res.jsonl"
    done = _interrupt(["predict", folder, "--no-detect", "--output", "jsonl", "--out", out, "--no-progress"],
                      tmp_path / ".res.jsonl.*.partial", 5, signal.SIGINT)
    assert done.returncode == 130, done.stderr
    assert "interrupted after" in done.stderr and "Traceback" not in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 5 <= len(rows) < 60 and not list(tmp_path.glob(".res.jsonl*"))
    code, _, _ = run(capsys, "predict", folder, "--no-detect", "--output", "jsonl", "--out", out, "--resume",
                       "--no-progress")
    files = [json.loads(line)["file"] for line in out.read_text().splitlines()]
    assert code == 0 and len(files) == 60 == len(set(files))
    # SIGTERM on a JSON list: a valid, shorter list
    out_json = tmp_path / "res.json"
    done = _interrupt(["predict", folder, "--no-detect", "--output", "json", "--out", out_json, "--no-progress"],
                      tmp_path / ".res.json.*.partial", 60, signal.SIGTERM)  # about 25 lines a file
    assert done.returncode == 143, done.stderr
    assert 2 <= len(json.loads(out_json.read_text())) < 60


def test_memory_stays_flat_over_a_batch(tmp_path, capsys, monkeypatch):
    """Results are written as they are made: 2,000 files cost about what 200 do, while each face here
    carries a 64 KB embedding (128 MB if the results were held). The real-model numbers on 20,000 files:
    benchmarks/predict_memory.py."""
    from agekit.runtime import cli
    from agekit.runtime.results import FaceResult

    class Fake:
        def predict_crops(self, crops, aligned=True):
            h, w = crops[0].shape[:2]
            return [FaceResult(age=30.0, std=3.0, interval=(25.0, 35.0), level=0.9, gender="female",
                               gender_prob=0.9, female_prob=0.9, box=(0, 0, w, h), crop_from="image",
                               embedding=np.ones(16384, np.float32), probs=np.ones(101, np.float32))]

    monkeypatch.setattr(cli, "build_estimator", lambda args: Fake())
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(image, "PNG")
    for k in range(10):
        (tmp_path / f"f{k}").mkdir()
        for i in range(200):
            (tmp_path / f"f{k}" / f"{i:03d}.png").write_bytes(image.getvalue())
    run(capsys, "predict", tmp_path / "f0", "--no-detect", "--output", "jsonl", "--out", tmp_path / "warm.jsonl")
    peaks = {}
    for n in (1, 10):
        out = tmp_path / f"out{n}.jsonl"
        tracemalloc.start()
        code, _, _ = run(capsys, "predict", *[tmp_path / f"f{k}" for k in range(n)], "--no-detect", "--output",
                         "jsonl", "--out", out, "--no-progress")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert code == 0 and len(out.read_text().splitlines()) == 200 * n
    assert peaks[10] - peaks[1] < 4 * 2**20, peaks  # inputs' names only: about 1 KB a file


# ---- inputs as they come ---------------------------------------------------------------------------------
def test_glob_over_a_symlink_loop_gives_one_error_row(tmp_path, capsys, monkeypatch):
    d = tmp_path / "d"
    png(d / "a.png")
    png(d / "sub" / "b.png", 1)
    (d / "loop").symlink_to(d)            # a link back to the folder: never descended by **
    (d / "self").symlink_to(d / "self")   # a link to itself: one error row
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "predict", "d/**", "--no-detect", "--output", "jsonl", "--no-progress")
    rows = {r["file"]: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and "Traceback" not in err
    assert rows["d/self"] == {"file": "d/self", "ok": False, "error": "symbolic link loop"}
    assert rows["d/a.png"]["ok"] and rows["d/sub/b.png"]["ok"] and len(rows) == 3
    assert err.strip().splitlines()[-1].startswith("3 files, 2 ok, 1 failed")


def test_folder_walk_link_rules_and_skipped_count(tmp_path, capsys):
    outside = png(tmp_path / "elsewhere" / "out.png", 7)
    png(tmp_path / "elsewhere" / "more" / "deep.png", 8)
    root = tmp_path / "album"
    inside = png(root / "a.png")
    (root / "same.png").symlink_to(inside)                      # inside the folder: the same file, once
    (root / "out.png").symlink_to(outside)                      # a file outside: not taken
    (root / "more").symlink_to(tmp_path / "elsewhere" / "more")  # a folder link: never descended
    (root / "notes.txt").write_text("x")
    png(root / ".hidden.png", 3)
    os.mkfifo(root / "pipe.jpg")                                # would block a reader: skipped
    code, out, err = run(capsys, "predict", root, "--no-detect", "--output", "jsonl", "--no-progress")
    files = [json.loads(line)["file"] for line in out.splitlines()]
    assert code == 0 and files == [str(root / "a.png")]
    assert err.strip() == ("1 file, 1 ok, 0 failed; 5 skipped (hidden: 1, link outside the folder: 1, "
                           "link to a folder: 1, not a regular file: 1, not an image: 1)")
    # named explicitly, a link to a file outside is followed; a FIFO is an error row, not a hang
    code, out, _ = run(capsys, "predict", root / "out.png", root / "pipe.jpg", "--no-detect", "--output", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and rows[0]["ok"] and "not a regular file" in rows[1]["error"]


def _heif_bytes() -> bytes:
    """A HEIC file's signature (ftyp box, brand heic) with nothing decodable after it."""
    return (24).to_bytes(4, "big") + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + b"\0" * 64


def test_heic_without_pillow_heif_is_an_error_row_not_a_silent_skip(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import pillow_heif -> ImportError
    monkeypatch.setattr(agekit.io, "_HEIF", None)
    png(tmp_path / "phone" / "a.png")
    (tmp_path / "phone" / "IMG_0001.HEIC").write_bytes(_heif_bytes())
    code, out, _ = run(capsys, "predict", tmp_path / "phone", "--no-detect", "--output", "jsonl", "--no-progress")
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and rows["IMG_0001.HEIC"]["error"] == "HEIC needs pillow-heif (pip install pillow-heif)"
    assert rows["a.png"]["ok"]


def test_heic_is_read_with_pillow_heif(tmp_path, capsys):
    pillow_heif = pytest.importorskip("pillow_heif")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    (tmp_path / "phone").mkdir()
    pillow_heif.from_pillow(image).save(tmp_path / "phone" / "IMG_0002.heic", quality=90)
    code, out, _ = run(capsys, "predict", tmp_path / "phone", "--no-detect", "--output", "jsonl")
    row = json.loads(out)
    assert code == 0 and row["ok"] and row["faces"][0]["box"] == [0, 0, 60, 40]


def _drop_file_permission_override():
    """In the child: root loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (from the bounding set, before exec),
    so file modes apply to it as to anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop() -> bool:
    if os.geteuid() != 0:
        return True  # file modes already apply
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_file_permission_override, check=True,
                       timeout=60)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def test_permission_denied_is_said_so(tmp_path, capsys, monkeypatch):
    png(tmp_path / "album" / "ok.png")
    locked = png(tmp_path / "album" / "locked.png", 1)
    locked_dir = tmp_path / "album" / "private"
    png(locked_dir / "x.png", 2)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    if not _can_drop():  # no way to make the OS refuse: monkeypatch only the open() call
        real_open = open

        def refusing_open(path, *a, **k):
            if str(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(agekit.io, "open", refusing_open, raising=False)
        code, out, _ = run(capsys, "predict", tmp_path / "album", "--no-detect", "--output", "jsonl")
        rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
        assert code == 1 and rows["locked.png"]["error"] == "permission denied"
        return
    locked.chmod(0)
    locked_dir.chmod(0)
    readonly.chmod(0o555)
    try:
        kw = {"capture_output": True, "text": True, "timeout": 120, "cwd": ROOT,
              "preexec_fn": _drop_file_permission_override if os.geteuid() == 0 else None}
        base = [sys.executable, "-m", "agekit", "predict", "--no-detect", "--no-progress"]
        proc = subprocess.run(base + [str(tmp_path / "album"), "--output", "jsonl"], check=False, **kw)
        rows = {Path(r["file"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
        assert proc.returncode == 1 and rows["ok.png"]["ok"], proc.stderr
        assert rows["locked.png"]["error"] == "permission denied"
        assert rows["private"]["error"] == "permission denied (folder not searched)"
        proc = subprocess.run(base + [str(tmp_path / "album" / "ok.png"), "--out", str(readonly / "r.jsonl")],
                              check=False, **kw)
        assert proc.returncode == 2 and "permission denied" in one_error_line(proc.stderr) and proc.stdout == ""
    finally:
        locked.chmod(0o644)
        locked_dir.chmod(0o755)
        readonly.chmod(0o755)


def test_one_pixel_limit_from_the_header(tmp_path, capsys):
    png_claiming_size(tmp_path / "bomb.png", 13342, 13342)     # 178.01 M pixels: just over the limit
    # 90 M pixels, 1-bit: Pillow warns, agekit reads it (and fails to decode it: broken)
    png_claiming_size(tmp_path / "wide.png", 10000, 9000, bit_depth=1, colour_type=0)
    png_claiming_size(tmp_path / "huge.png", 100000, 100000)   # beyond Pillow's own refusal (178.96 M)
    code, out, _ = run(capsys, "predict", tmp_path / "bomb.png", tmp_path / "wide.png", tmp_path / "huge.png",
                       "--no-detect", "--output", "jsonl")
    bomb, wide, huge = (json.loads(line)["error"] for line in out.splitlines())
    assert code == 1 and agekit.io.MAX_PIXELS == 178_000_000
    assert bomb == "image too large (13342x13342 = 178,008,964 pixels; limit 178,000,000)"
    assert huge == "image too large (10,000,000,000 pixels; limit 178,000,000)"
    assert "too large" not in wide and "corrupt or truncated" in wide


def test_large_photos_are_read_reduced_with_boxes_in_photo_pixels(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    Image.fromarray(rng.integers(0, 2, (950, 940), dtype=np.uint8) * 255).convert("1").save(tmp_path / "scan.png")
    loaded = agekit.io.read_image(tmp_path / "big.jpg", work_pixels=100_000)
    h, w = loaded.array.shape[:2]
    assert w * h <= 100_000 and loaded.size == (1200, 900) and loaded.scale == (1200 / w, 900 / h)
    monkeypatch.setattr(agekit.io, "WORK_PIXELS", 100_000)
    code, out, err = run(capsys, "predict", tmp_path / "big.jpg", tmp_path / "scan.png", "--no-detect",
                         "--output", "jsonl")
    boxes = [json.loads(line)["faces"][0]["box"] for line in out.splitlines()]
    assert code == 0 and boxes == [[0, 0, 1200, 900], [0, 0, 940, 950]], err
    code, out, _ = run(capsys, "predict", tmp_path / "big.jpg", "--boxes", "100,200,700,800", "--output", "jsonl")
    assert code == 0 and json.loads(out)["faces"][0]["box"] == [100, 200, 700, 800]
    code, out, _ = run(capsys, "predict", tmp_path / "big.jpg", "--boxes", "1250,200,1300,800", "--output", "jsonl")
    assert code == 1 and "outside the 1200x900 image" in json.loads(out)["error"]  # the photo's own size


def test_a_turned_photo_read_reduced_keeps_its_orientation(tmp_path, capsys, monkeypatch):
    image = Image.new("RGB", (1200, 600), (200, 30, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": shown 600 wide, 1200 high
    image.save(tmp_path / "turned.jpg", exif=exif)
    monkeypatch.setattr(agekit.io, "WORK_PIXELS", 50_000)
    code, out, _ = run(capsys, "predict", tmp_path / "turned.jpg", "--no-detect", "--output", "jsonl")
    assert code == 0 and json.loads(out)["faces"][0]["box"] == [0, 0, 600, 1200]


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "I;16", "CMYK"])
def test_every_mode_reads_reduced(tmp_path, mode):
    ext = ".jpg" if mode == "CMYK" else ".tif" if mode == "I;16" else ".png"
    Image.new(mode, (500, 300)).save(tmp_path / f"x{ext}")
    loaded = agekit.io.read_image(tmp_path / f"x{ext}", work_pixels=10_000)
    h, w = loaded.array.shape[:2]
    assert loaded.array.dtype == np.uint8 and loaded.array.shape[2] == 3 and w * h <= 10_000
    assert loaded.size == (500, 300) and abs(loaded.scale[0] - 500 / w) < 1e-9 and loaded.reduced


MEMORY_SCRIPT = r"""
import json, resource, sys
from PIL import Image
Image.new("1", (9400, 9500)).save(sys.argv[1])   # 11 KB on disk, 89 M pixels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from agekit.io import read_image
loaded = read_image(sys.argv[1])
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"shape": loaded.array.shape, "size": loaded.size, "grown_mb": grown}))
"""


def test_a_huge_legal_image_costs_bounded_memory(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "scan.png")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    h, w, _ = result["shape"]
    assert h * w <= agekit.io.WORK_PIXELS and result["size"] == [9400, 9500]
    assert result["grown_mb"] < 300, result  # above what making the file took; it was about 1,100 MB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict] = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 in a thread; stopped at the end of the test, and by itself after 60 s."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield httpd
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_urls_and_stdin(tmp_path, capsys, monkeypatch, server):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    image = png(tmp_path / "face.png").read_bytes()
    _Handler.files = {"/photos/face.png": image, "/notes.jpg": b"not an image at all\n", "/big.png": image * 40}
    monkeypatch.setattr("agekit.runtime.inputs.MAX_DOWNLOAD_BYTES", len(image) * 10)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/photos/face.png", f"{base}/missing.png", f"{base}/notes.jpg", f"{base}/big.png"]
    ann = tmp_path / "ann"
    code, out, err = run(capsys, "predict", *urls, "--no-detect", "--output", "jsonl", "--save-annotated", ann)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["file"] for r in rows] == urls
    assert rows[0]["ok"] and rows[0]["faces"][0]["box"] == [0, 0, 16, 16]
    assert rows[1]["error"] == "download failed (HTTP 404 Not Found)"
    assert "not a readable image" in rows[2]["error"] and "limit" in rows[3]["error"]
    assert [p.name for p in ann.iterdir()] == ["face.png"] and err.strip() == "4 files, 1 ok, 3 failed"
    stdin = io.TextIOWrapper(io.BytesIO(image))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(capsys, "predict", "-", "--no-detect", "--output", "jsonl")
    assert code == 0 and json.loads(out)["file"] == "-" and json.loads(out)["ok"]


def test_detector_usage_errors_come_once_before_any_file(photos, tmp_path, capsys, reads):
    fake = tmp_path / "yunet.onnx"
    fake.write_bytes(b"not a model")
    for argv, needle in [(["--detector", "nope"], "unknown face detector"),
                         (["--detector", "yunet"], "needs --detector-model"),
                         (["--detector", "yunet", "--detector-model", tmp_path / "none.onnx"], "file not found"),
                         (["--detector", "yunet", "--detector-model", fake], "cannot load as a YuNet model"),
                         (["--detector", "centerface", "--detector-model", fake], "not an option")]:
        code, out, err = run(capsys, "predict", photos, *argv)
        assert code == 2 and out == "" and needle in one_error_line(err), (argv, err)
    assert reads == []
