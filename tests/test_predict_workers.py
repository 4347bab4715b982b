"""agekit predict / check --workers N: worker processes, one model each, and the same output as one process.

Real photos (variants of examples/astronaut.jpg), the packaged model, real processes and real signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.cli import run_cli as run

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Ten photos that differ (so chunks that differ between runs hold different faces), a file that is
    not an image and a photo without a face."""
    root = tmp_path_factory.mktemp("workers")
    image = Image.open(ASTRONAUT).convert("RGB")
    w, h = image.size
    variants = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image.resize((w * 3 // 4, h * 3 // 4)),
                image.resize((w * 5 // 4, h * 5 // 4)), image.crop((100, 0, w, h - 100)), image.convert("L"),
                image.rotate(90, expand=True), image.crop((0, 0, w - 150, h)),
                image.resize((w // 2, h // 2)), image.rotate(8)]
    for i, im in enumerate(variants):
        im.save(root / f"photo{i:02d}.jpg", quality=90)
    (root / "notes.jpg").write_text("this is not an image\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(root / "noise.png")
    return root


def test_two_workers_write_what_one_process_writes(photos, tmp_path, capsys):
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.jsonl"
        annotated = tmp_path / f"annotated{workers}"
        code, _, err = run(capsys, "predict", photos, "--output", "jsonl", "--out", out, "--workers", workers,
                           "--save-annotated", annotated, "--no-progress")
        assert code == 1 and "12 files, 10 ok, 2 failed" in err and "Traceback" not in err, err
        outputs[workers] = out.read_text()
        assert sorted(p.name for p in annotated.iterdir()) == [f"photo{i:02d}.jpg" for i in range(10)]
    assert outputs[2] == outputs[1]  # same rows, same order, same numbers
    rows = [json.loads(line) for line in outputs[2].splitlines()]
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in photos.iterdir())
    errors = {Path(r["file"]).name: r["error"] for r in rows if not r["ok"]}
    assert errors == {"noise.png": "no face found", "notes.jpg": "not a readable image (UnidentifiedImageError)"}


def test_check_and_resume_with_workers(photos, tmp_path, capsys):
    """agekit check's per-face fields come from each worker's own estimator; --resume appends the rest."""
    code, one, _ = run(capsys, "check", "--min-age", 18, photos, "--output", "csv", "--no-progress")
    assert code == 1
    code, two, err = run(capsys, "check", "--min-age", 18, photos, "--output", "csv", "--workers", 3,
                         "--no-progress")
    assert code == 1 and two == one and "over" in two, err
    out = tmp_path / "res.csv"
    lines = one.splitlines(keepends=True)
    files = [line.split(",")[0] for line in lines[1:]]
    first_four = [line for line, f in zip(lines[1:], files) if f in sorted(set(files))[:4]]
    out.write_text(lines[0] + "".join(first_four))  # the header and the rows of four files
    code, _, err = run(capsys, "check", "--min-age", 18, photos, "--output", "csv", "--out", out, "--resume",
                       "--workers", 2, "--no-progress")
    assert code == 0 and "8 files, 8 ok, 0 failed; 4 already in" in err, err  # the two bad files were done
    assert out.read_text() == one


def test_usage_errors_come_first(photos, tmp_path, capsys):
    out = tmp_path / "res.jsonl"
    code, _, err = run(capsys, "predict", photos, "--workers", 0)
    assert code == 2 and "--workers must be >= 1, got 0" in err
    messages = []
    for workers in (1, 2):
        code, _, err = run(capsys, "predict", photos, "--workers", workers, "--model", tmp_path / "missing.onnx",
                           "--out", out)
        assert code == 2 and "Traceback" not in err and not out.exists() and not list(tmp_path.glob(".res*"))
        messages.append(err)
    assert messages[0] == messages[1] and "missing.onnx" in messages[0]


def test_standard_input_is_read_by_the_main_process(photos):
    """Worker processes have no standard input: with `-` among the inputs, the files are scored here."""
    done = subprocess.run([sys.executable, "-m", "agekit", "predict", "-", photos / "photo01.jpg", "--workers", "2",
                           "--output", "jsonl"], check=False, input=(photos / "photo00.jpg").read_bytes(),
                          capture_output=True, cwd=ROOT, timeout=120)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and [(r["file"], r["ok"]) for r in rows] == [("-", True),
                                                                             (str(photos / "photo01.jpg"), True)]


def test_threads_are_shared_out(monkeypatch):
    from agekit.runtime.workers import threads_per_worker

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert [threads_per_worker(n, None) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert threads_per_worker(2, 3) == 3  # --threads is per worker, as given
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_worker(2, None) == 1


# Each file takes at least 50 ms more in the workers: they import this script as their main module (as
# multiprocessing does), so they have the patch too.
SLOW_DRIVER = r"""
import sys, time
import agekit.runtime.scoring as scoring
real = scoring.process_chunk
def slow(args, estimator, items, *rest):
    time.sleep(0.05 * len(items))
    return real(args, estimator, items, *rest)
scoring.process_chunk = slow
if __name__ == "__main__":
    from agekit.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def _descendants(pid: int) -> list[int]:
    """The process's children, theirs, ... (the workers are the fork server's children)."""
    found = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True).stdout.split()]
    return found + [d for p in found for d in _descendants(p)]


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _start_slow_batch(photos, tmp_path, **popen):
    """60 photos scored by 2 slowed-down workers (SLOW_DRIVER) into res.jsonl, in a new session; returns once
    8 rows are written (or the run ended): (folder, out file, the running process)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        os.link(photos / f"photo{i % 10:02d}.jpg", folder / f"{i:02d}.jpg")
    out = tmp_path / "res.jsonl"
    driver = tmp_path / "slow_agekit.py"
    driver.write_text(SLOW_DRIVER)
    argv = ["predict", folder, "--output", "jsonl", "--out", out, "--workers", "2", "--no-progress"]
    proc = subprocess.Popen([sys.executable, driver, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True, **popen)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(tmp_path.glob(".res.jsonl.*.partial"))
        if partial and partial[0].read_text().count("\n") >= 8:
            break
        time.sleep(0.02)
    return folder, out, proc


def _kill_if_running(proc) -> None:
    """A run a failed test left going is killed with its whole group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _rows_kept_and_resume_finishes(capsys, folder, out, tmp_path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 8 <= len(rows) < 60 and not list(tmp_path.glob(".res.jsonl*"))
    code, _, _ = run(capsys, "predict", folder, "--output", "jsonl", "--out", out, "--resume", "--workers", 2,
                     "--no-progress")
    files = [json.loads(line)["file"] for line in out.read_text().splitlines()]
    assert code == 0 and sorted(files) == sorted(str(p) for p in folder.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_the_workers_and_keep_the_rows(photos, tmp_path, capsys, sig):
    """Ctrl-C reaches the whole process group (workers included), SIGTERM only the main process: either
    way the rows done are in place, no worker is left and --resume finishes the batch."""
    # a shell's background job ignores SIGINT and its children inherit that
    folder, out, proc = _start_slow_batch(photos, tmp_path,
                                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        helpers = _descendants(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        _kill_if_running(proc)
    assert proc.returncode == 128 + sig, err
    assert "interrupted after" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 10  # the fork server and the workers go as the main process ends
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(helpers) >= 3 and not [p for p in helpers if _alive(p)]  # fork server + 2 workers at least
    _rows_kept_and_resume_finishes(capsys, folder, out, tmp_path)


def test_a_worker_that_dies_keeps_the_rows_before_it(photos, tmp_path, capsys):
    """A worker killed with -9 (as by the OOM killer): a one-line error, exit 2, the rows done are in place and
    --resume finishes the batch."""
    folder, out, proc = _start_slow_batch(photos, tmp_path)
    try:
        # the workers are the fork server's children, grandchildren of the main process
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], check=False, capture_output=True,
                                                   text=True).stdout.split()]
        workers = [d for c in children for d in _descendants(c)]
        assert workers, "no worker process found"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        _kill_if_running(proc)
    assert proc.returncode == 2, err
    assert "a worker process stopped unexpectedly" in err and "--resume" in err and "Traceback" not in err, err
    _rows_kept_and_resume_finishes(capsys, folder, out, tmp_path)


def test_auto_workers_use_every_core_on_large_folders_only(monkeypatch):
    from agekit.runtime import workers

    monkeypatch.setattr(workers, "physical_cores", lambda: 4)
    assert workers.auto_workers(workers.AUTO_MIN_FILES - 1) == 1      # small folder: no worker processes
    assert workers.auto_workers(workers.AUTO_MIN_FILES) == 4          # one per physical core
    monkeypatch.setattr(workers, "physical_cores", lambda: 1)
    assert workers.auto_workers(10_000) == 1                          # one core: one process
    assert workers.parse_workers("auto") == "auto" and workers.parse_workers("3") == 3


def test_workers_option_errors_are_one_line(photos, capsys):
    for bad in ("x", "0", "1.5"):
        code, _, err = run(capsys, "predict", photos, "--workers", bad, "--no-progress")
        assert code == 2 and "--workers" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
