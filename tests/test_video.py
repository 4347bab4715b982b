"""Video tracking (agekit.video): the fusion rule against hand-computed values, tracking and the CLI on short
videos written here with OpenCV from examples/astronaut.jpg (public domain), and every bad input: an empty
file, a file that is not a video, a truncated video, a stream that drops, a camera that is not there."""
import functools
import http.server
import json
import math
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.cli import run_cli as cli

from agekit.errors import AgekitError
from agekit.video.fusion import fuse_ages, fuse_gender, fused_interval

pytestmark = pytest.mark.torchfree
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
W, H, FPS = 480, 360, 25


# ---- the fusion rule, by hand -----------------------------------------------------------------------------
def test_one_frame_is_the_frame_estimate():
    age, std, keep, n_eff = fuse_ages([30.0], [5.0])
    assert (age, std, n_eff, keep.tolist()) == (30.0, 5.0, 1.0, [True])


def test_repeated_identical_frames_add_no_information():
    age, std, _, n_eff = fuse_ages([30.0] * 40, [5.0] * 40)
    assert age == 30.0 and std == pytest.approx(5.0) and n_eff == pytest.approx(1.0)


def test_disagreeing_frames_narrow_the_std_by_the_noise_they_show():
    # var1 = 25, noise = var([28, 32], ddof=1) = 8: var = max(25 - 8, 0.5 * 25) + 8 / 2 = 21
    age, std, _, n_eff = fuse_ages([28.0, 32.0], [5.0, 5.0], shared_min=0.5)
    assert age == pytest.approx(30.0) and std == pytest.approx(math.sqrt(21.0)) and n_eff == pytest.approx(25 / 21)


def test_shared_part_is_floored():
    # noise = 200 > var1 = 25: shared = 0.5 * 25 = 12.5, var = 12.5 + 200 / 2 = 112.5
    _, std, _, _ = fuse_ages([20.0, 40.0], [5.0, 5.0], shared_min=0.5)
    assert std == pytest.approx(math.sqrt(112.5))
    # many frames scattered around 30: var -> 12.5, n_eff -> 1 / shared_min = 2
    rng = np.random.default_rng(0)
    _, std, _, n_eff = fuse_ages(30 + rng.normal(0, 4.0, 4000), np.full(4000, 5.0), shared_min=0.5)
    assert std == pytest.approx(math.sqrt(12.5), rel=0.02) and n_eff == pytest.approx(2.0, rel=0.02)


def test_precision_weighted_mean_and_outliers():
    age, _, _, _ = fuse_ages([20.0, 30.0], [2.0, 4.0])  # weights 1/4 and 1/16: (5 + 1.875) / 0.3125
    assert age == pytest.approx(22.0)
    age, _, keep, _ = fuse_ages([30.0, 31.0, 29.0, 70.0], [5.0] * 4)  # 70 is 39.5 from the median 30.5 > 15
    assert keep.tolist() == [True, True, True, False] and age == pytest.approx(30.0)


def test_gender_is_the_mean_log_odds():
    assert fuse_gender([0.8, 0.8]) == pytest.approx(0.8)
    assert fuse_gender([0.9, 0.1]) == pytest.approx(0.5)
    assert fuse_gender([0.9, 0.5]) == pytest.approx(0.75)  # logits log 9 and 0: mean log 3 -> 3 / 4
    assert fuse_gender([None, None]) is None


def test_interval_uses_the_conformal_rule_or_the_normal_one():
    calibration = {"std_floor": 1.0}
    assert fused_interval(30.0, 4.0, 0.9, calibration, 1.5, 0, 100) == pytest.approx((24.0, 36.0))
    assert fused_interval(30.0, 0.2, 0.9, calibration, 1.5, 0, 100) == pytest.approx((28.5, 31.5))  # floor
    assert fused_interval(2.0, 4.0, 0.9, calibration, 1.5, 0, 100) == pytest.approx((0.0, 8.0))      # clipped
    lo, hi = fused_interval(30.0, 4.0, 0.9, None, None, 0, 100)
    assert (lo, hi) == pytest.approx((30 - 1.6448536 * 4, 30 + 1.6448536 * 4))


# ---- videos written here ------------------------------------------------------------------------------------
def _face(size):
    return cv2.resize(cv2.imread(str(ASTRONAUT)), (size, size), interpolation=cv2.INTER_AREA)


def _background(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([90 + 50 * np.sin(xx / 60 + c) * np.cos(yy / 45) for c in (0, 1, 2)], axis=2)
    return np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)


def write_video(path, n=24, people=1, fourcc="mp4v", seed=0):
    """A face (two: the second mirrored) moving over a background; returns the frames' face rects."""
    faces = [_face(300), cv2.flip(_face(260), 1)]
    bg, rng = _background(seed), np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened()
    for i in range(n):
        frame = bg.copy()
        for k in range(people):
            face = faces[k]
            span = W - face.shape[1] - 20  # the first face goes right and back (a long video stays inside)
            x = (10 + span - abs(span - (3 * i) % (2 * span))) if k == 0 else (W - face.shape[1] - 10 - 3 * i // 2)
            y = 20 if k == 0 else 90
            frame[y:y + face.shape[0], x:x + face.shape[1]] = face
        frame = np.clip(frame.astype(np.int16) + rng.normal(0, 3, frame.shape).astype(np.int16), 0, 255)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def estimator():
    pytest.importorskip("trackers")
    from agekit import AgeEstimator

    return AgeEstimator(threads=2)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    one = write_video(root / "one.mp4", n=24)
    two = write_video(root / "two.avi", n=16, people=2, fourcc="MJPG")
    return {"root": root, "one": one, "two": two}


def test_track_one_face_one_id_steady_age(estimator, clips):
    run = estimator.track(clips["one"], detect_every=2)
    frames = list(run)
    assert [f.index for f in frames] == list(range(24)) and run.error is None
    ids = {face.track for f in frames for face in f.faces}
    assert len(ids) == 1                                        # one person, one track, no switch
    assert sum(f.detected for f in frames) == 12                # the detector ran on every second frame
    carried = [face for f in frames if not f.detected for face in f.faces]
    assert carried and all(not c.detected and c.frame is None for c in carried)
    per_frame = [face.frame.age for f in frames for face in f.faces if face.frame is not None]
    shown = [face.fused.age for f in frames for face in f.faces if face.fused is not None]
    assert len(per_frame) >= 5
    (summary,) = run.summaries()
    assert summary.frames_used == len(per_frame) and summary.frames == len(shown)
    # the steady age is the fusion of the frames' estimates, and moves less than they do
    assert min(per_frame) - 1e-6 <= summary.age <= max(per_frame) + 1e-6
    assert np.std(shown) <= np.std(per_frame) + 1e-9
    photo = estimator.predict(str(ASTRONAUT))[0]
    assert abs(summary.age - photo.age) < 8                     # the same face as the photo, moving
    lo, hi = summary.interval
    assert lo < summary.age < hi and summary.gender in ("female", "male")
    # frames given as arrays instead of a path give the same tracks
    arrays = []
    cap = cv2.VideoCapture(str(clips["one"]))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        arrays.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    again = estimator.track(arrays[:8], fps=FPS, detect_every=2).run()
    assert len(again) == 1 and again[0].frames_used >= 2


def test_two_faces_two_tracks_and_every(estimator, clips):
    run = estimator.track(clips["two"], every=2, detect_every=1)
    frames = list(run)
    assert [f.index for f in frames] == list(range(0, 16, 2))
    summaries = run.summaries()
    assert len(summaries) == 2 and len({s.track for s in summaries}) == 2
    assert all(s.frames_used >= 3 for s in summaries)


def test_cli_outputs(estimator, clips, tmp_path, capsys):
    out, frames, ann = tmp_path / "tracks.json", tmp_path / "frames.jsonl", tmp_path / "annotated.mp4"
    code, _, err = cli(capsys, "predict", clips["one"], "--output", "json", "--out", out, "--frames-out", frames,
                       "--save-annotated", ann, "--threads", "2")
    assert code == 0, err
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["ok"] and rows[0]["track"] >= 0 and rows[0]["frames_used"] >= 5
    assert rows[0]["interval"][0] < rows[0]["age"] < rows[0]["interval"][1]
    lines = [json.loads(line) for line in frames.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(24))
    assert {f["track"] for r in lines for f in r["faces"]} == {rows[0]["track"]}
    last = [f for r in lines for f in r["faces"]][-1]
    assert last["age"] == rows[0]["age"]                        # the steady age shown last is the summary's
    cap = cv2.VideoCapture(str(ann))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (W, H)
    cap.release()
    assert not list(tmp_path.glob(".*"))                        # no temporary file left behind
    code, table, _ = cli(capsys, "predict", clips["one"], "--max-seconds", "0.3", "--no-progress")
    assert code == 0 and table.splitlines()[0].split()[:3] == ["file", "track", "first"]
    assert float(table.splitlines()[1].split()[3]) <= 0.3      # last seen within --max-seconds


def test_cli_bad_inputs_keep_good_results(estimator, clips, tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video\n" * 50)
    full = write_video(tmp_path / "cut.avi", n=30, fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut_short.avi"
    cut.write_bytes(data[: len(data) * 55 // 100])               # truncated mid-stream: its index is gone
    out = tmp_path / "rows.csv"
    code, _, err = cli(capsys, "predict", empty, junk, cut, clips["one"], "--output", "csv", "--out", out,
                       "--no-progress", "--detect-every", "3")
    assert code == 1
    import csv

    rows = list(csv.DictReader(out.open()))
    by_file = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    assert "empty" in by_file[str(empty)][0]["error"]
    assert "not a video" in by_file[str(junk)][0]["error"]
    cut_rows = by_file[str(cut)]
    assert any(r["track"] and r["age"] for r in cut_rows)       # the frames before the cut are used ...
    assert any("stops after frame" in r["error"] for r in cut_rows)  # ... and the cut is said
    assert by_file[str(clips["one"])][0]["age"] and not by_file[str(clips["one"])][0]["error"]
    assert "4 videos, 1 ok, 3 failed" in err and "Traceback" not in err


def test_file_without_a_length_is_timed_by_its_frame_rate(tmp_path):
    from agekit.video.source import open_source

    path = tmp_path / "raw.mjpeg"  # concatenated JPEGs: FFmpeg knows the rate (25) but not the length
    with path.open("wb") as fh:
        for i in range(10):
            fh.write(cv2.imencode(".jpg", np.full((48, 64, 3), 20 * i, np.uint8))[1].tobytes())
    source = open_source(str(path))
    assert source.frame_count is None and source.fps > 0
    times = [t for _, t, _ in source]
    assert times == pytest.approx([i / source.fps for i in range(10)])  # the video's clock, not the reader's
    assert source.error is None                                        # its end is not a dropped camera


def test_stream_that_drops_keeps_its_frames(estimator, tmp_path, capsys):
    full = write_video(tmp_path / "full.avi", n=30, fourcc="MJPG")
    data = full.read_bytes()
    (tmp_path / "drop.avi").write_bytes(data[: len(data) // 2])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/drop.avi"
        code, out, err = cli(capsys, "predict", url, "--output", "jsonl", "--no-progress")
    finally:
        server.shutdown()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and rows[0]["ok"] and rows[0]["frames_used"] >= 1
    assert not rows[-1]["ok"] and "stops after frame" in rows[-1]["error"] and url in err


def test_usage_errors(estimator, clips, capsys):
    code, _, err = cli(capsys, "predict", clips["one"], ASTRONAUT)
    assert code == 2 and "separate runs" in err
    code, _, err = cli(capsys, "predict", ASTRONAUT, "--every", "2")
    assert code == 2 and "--every applies to videos" in err
    code, _, err = cli(capsys, "predict", clips["one"], "--out", clips["one"])
    assert code == 2 and "would be overwritten" in err
    code, _, err = cli(capsys, "predict", clips["one"], "--frames-out", "-")
    assert code == 2 and "both go to stdout" in err
    code, _, err = cli(capsys, "predict", clips["one"], "--no-detect")
    assert code == 2 and "--no-detect does not apply to videos" in err
    code, _, err = cli(capsys, "predict", clips["one"], "--save-annotated", clips["root"] / "out.webm")
    assert code == 2 and "agekit writes .avi, .m4v, .mkv, .mov, .mp4 videos" in err
    assert not list(clips["root"].glob("*.webm"))
    code, _, err = cli(capsys, "predict")
    assert code == 2 and "--camera" in err
    code, _, err = cli(capsys, "predict", "--camera", "97", "--no-progress")
    assert code == 1 and "camera 97: cannot open" in err


def test_missing_tracker_names_the_extra(monkeypatch):
    import sys

    from agekit.video.tracking import _bytetrack

    monkeypatch.setitem(sys.modules, "trackers", None)  # as on an install without the extra
    with pytest.raises(AgekitError, match=r"agekit\[video\]"):
        _bytetrack(30.0, 1.0)


def test_interrupted_run_writes_its_tracks(estimator, tmp_path):
    """SIGTERM (as Ctrl-C ends a webcam run) in the middle of a video: exit 143, the tracks so far written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    clip = write_video(tmp_path / "long.avi", n=400, fourcc="MJPG")
    out, frames = tmp_path / "people.json", tmp_path / "frames.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "agekit", "predict", str(clip), "--output", "json", "--out",
                             str(out), "--frames-out", str(frames), "--no-progress", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(tmp_path.glob(".frames.jsonl.*.partial"))
        if partial and partial[0].read_text().count('"scored": true') >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["ok"] and rows[0]["frames_used"] >= 2
    lines = frames.read_text().splitlines()
    assert 2 <= len(lines) < 400 and "interrupted" in err
