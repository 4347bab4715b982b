"""Video tracking benchmark: per-track vs per-frame ages, flicker, identity switches, interval coverage, speed.

Videos are composed at run time from UTKFace test-split photos (utkface_v1 split, known ages and genders)
pasted over a synthetic background and written with OpenCV (mp4v, 25 fps, 640x480) into a temporary
folder; nothing from the dataset is kept. Scenarios, one photo (two for crossing) each:
  pan_zoom    the face moves across the frame and grows (3 s)
  still       the face still, with sensor noise (3 s): flicker of the shown age
  brightness  the face still-ish, brightness swinging 0.55x-1.45x (3 s)
  leave       the face walks out of the frame, is away 1.2 s, comes back (3.6 s)
  crossing    two faces cross, one passing in front of the other (3 s): identity switches
Each video runs through AgeEstimator().track(path) with the default settings. A tracked face is given to the
person whose pasted photo holds its box centre (the front one where two overlap).

Reported: per-track MAE (the track's fused age) against the per-frame MAE of the same scored frames; the 90%
interval coverage and half-width of both, and of a naive product of likelihoods; flicker (std of the shown
age over the still videos) per frame vs tracked; identity swaps (a person's id becomes another person's)
and fragments (a person gets a new id), tracks per person; the SHARED_MIN floor (fusion.py) on half the
videos: the smallest grid value that covers as well as no narrowing at all, checked on the other half;
frames per second on a 640x480 video with one and with three faces (decoding included) for detect_every
1, 2, 3 (median of 3 interleaved runs).

    python benchmarks/video_tracking.py --people 40 --out benchmarks/results/video_tracking.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from agekit import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS, W, H = 25, 640, 480
SCENARIOS = ("pan_zoom", "still", "brightness", "leave", "crossing")


def test_photos(utk: Path, n: int, seed: int):
    """(path, age, female) of n UTKFace test-split photos, ages spread by sorting a random sample."""
    split = {}
    for line in (ROOT / "agekit/splits/utkface_v1.csv").read_text().splitlines():
        if "," in line and not line.startswith("#"):
            k, s = line.split(",", 1)
            split[k] = s
    names = sorted(p.name for p in utk.iterdir() if split.get(p.name) == "test" and p.name.count("_") >= 3)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(names), size=min(n, len(names)), replace=False)
    out = []
    for i in pick:
        age, gender = names[i].split("_")[:2]
        out.append((utk / names[i], int(age), gender == "1"))
    return out


def background(rng) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([80 + 60 * np.sin(xx / 90 + c) * np.cos(yy / 70 - c) for c in (0.0, 1.3, 2.6)], axis=2)
    base += rng.normal(0, 6, base.shape).astype(np.float32)
    return np.clip(base + 60, 0, 255).astype(np.uint8)


def paste(canvas, face, x, y, size, gain=1.0):
    """Paste `face` (BGR) scaled to size x size at (x, y) (clipped); its rect (x1, y1, x2, y2) or None."""
    img = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    if gain != 1.0:
        img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + size, W), min(y + size, H)
    if x2 - x1 < size * 0.5 or y2 - y1 < size * 0.5:
        return None
    canvas[y1:y2, x1:x2] = img[y1 - y:y2 - y, x1 - x:x2 - x]
    return (x, y, x + size, y + size)


def compose(scenario, faces, bg, rng):
    """Frames (BGR) and, per frame, the list of (person, rect) visible (front person last)."""
    frames, truth = [], []
    n = {"leave": 90}.get(scenario, 75)
    for i in range(n):
        u = i / (n - 1)
        canvas = bg.copy()
        vis = []
        if scenario == "pan_zoom":
            size = int(170 + 90 * u)
            vis.append((0, paste(canvas, faces[0], int(40 + 340 * u), int(150 - 60 * u), size)))
        elif scenario == "still":
            vis.append((0, paste(canvas, faces[0], 220, 120, 210)))
        elif scenario == "brightness":
            gain = 1.0 + 0.45 * math.sin(2 * math.pi * 1.5 * u)
            vis.append((0, paste(canvas, faces[0], 200 + int(20 * math.sin(6 * u)), 120, 210, gain)))
        elif scenario == "leave":
            t = i / FPS
            x = 200 + int(420 * min(t, 1.2) / 1.2) if t < 2.4 else 620 - int(420 * min(t - 2.4, 1.2) / 1.2)
            if not 1.2 <= t < 2.4:
                vis.append((0, paste(canvas, faces[0], x, 130, 200)))
        else:  # crossing: person 1 behind (pasted first), person 0 in front
            vis.append((1, paste(canvas, faces[1], int(420 - 340 * u), 110, 190)))
            vis.append((0, paste(canvas, faces[0], int(40 + 360 * u), 150, 200)))
        canvas = np.clip(canvas.astype(np.int16) + rng.normal(0, 3, canvas.shape).astype(np.int16), 0, 255)
        frames.append(canvas.astype(np.uint8))
        truth.append([(p, r) for p, r in vis if r is not None])
    return frames, truth


def write_video(path, frames):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for f in frames:
        w.write(f)
    w.release()


def owner(box, visible):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hit = [p for p, (x1, y1, x2, y2) in visible if x1 <= cx <= x2 and y1 <= cy <= y2]
    return hit[-1] if hit else None  # the front one


def run_video(est, path, truth, people):
    """Per track: person, scored frames (m, s, lo, hi), shown ages; per person: track id sequence."""
    run = est.track(str(path))
    tracks, seq = {}, {p: [] for p in range(len(people))}
    for fr in run:
        for face in fr.faces:
            p = owner(face.box, truth[fr.index])
            t = tracks.setdefault(face.track, {"persons": [], "frames": [], "shown": [], "times": []})
            t["persons"].append(p)
            if face.frame is not None:
                t["frames"].append((face.frame.age, face.frame.std, *face.frame.interval, face.frame.female_prob))
            if face.fused is not None:
                t["shown"].append(face.fused.age)
                t["times"].append(fr.time)
            if p is not None and fr.detected:
                seq[p].append(face.track)
    summaries = {s.track: s for s in run.summaries()}
    out = []
    for tid, t in tracks.items():
        ps = [p for p in t["persons"] if p is not None]
        if not ps or not t["frames"] or summaries[tid].age is None:
            continue
        person = max(set(ps), key=ps.count)
        s = summaries[tid]
        out.append({"track": tid, "person": person, "age": people[person][1], "female": people[person][2],
                    "frames": t["frames"], "shown": t["shown"], "times": t["times"],
                    "fused": (s.age, s.std, *s.interval, s.female_prob, s.n_eff)})
    # an id change is a swap when the new id is (or was) another person's, else a fragment (a new id)
    swaps = fragments = 0
    for p, ids in seq.items():
        others = {i for q, other in seq.items() if q != p for i in other}
        for a, b in itertools.pairwise(ids):
            if a != b:
                swaps, fragments = swaps + (b in others), fragments + (b not in others)
    n_ids = {p: len(set(ids)) for p, ids in seq.items()}
    return out, (swaps, fragments), n_ids, run.error


def fused_coverage(tracks, shared_min, est):
    """(coverage, mean half-width) of the tracks' fused 90% intervals; shared_min "naive": the product of
    independent Gaussian likelihoods (precision-weighted mean, std = 1 / sqrt(sum 1 / s_t^2))."""
    from agekit.video.fusion import fuse_ages, fused_interval

    hits, widths = [], []
    for t in tracks:
        m = np.array([f[0] for f in t["frames"]])
        s = np.array([f[1] for f in t["frames"]])
        if shared_min == "naive":
            w = 1.0 / s ** 2
            age, std = float(np.sum(w * m) / np.sum(w)), float(1.0 / math.sqrt(np.sum(w)))
        else:
            age, std, _, _ = fuse_ages(m, s, shared_min)
        lo, hi = fused_interval(age, std, est.level, est.calibration, est.q, est.model.age_min, est.model.age_max)
        hits.append(lo <= t["age"] <= hi)
        widths.append((hi - lo) / 2)
    return float(np.mean(hits)), float(np.mean(widths))


def speed(est, tmp, faces, bg, rng, n_faces, detect_every, frames=100):
    path = Path(tmp) / f"speed{n_faces}.mp4"
    if not path.exists():
        clip = []
        for i in range(frames):
            canvas = bg.copy()
            for k in range(n_faces):
                size = 170 if n_faces == 1 else 130
                x = [230, 40, 440][k] + int(20 * math.sin(i / 10 + k))
                paste(canvas, faces[k], x, 140 + 20 * k, size)
            clip.append(canvas)
        write_video(path, clip)
    run = est.track(str(path), detect_every=detect_every)
    start = time.perf_counter()
    n = sum(1 for _ in run)
    return n / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", str(ROOT.parent / "shared/data")))
    p.add_argument("--people", type=int, default=40, help="photos to use (videos: people / 6 of each scenario "
                                                           "plus crossings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/video_tracking.json"))
    p.add_argument("--raw", help="also write the per-track numbers (JSON) here")
    args = p.parse_args()
    from agekit import AgeEstimator
    from agekit.video.fusion import SHARED_MIN

    est = AgeEstimator()
    rng = np.random.default_rng(args.seed)
    people = test_photos(Path(args.data) / "UTKFace", args.people, args.seed)
    faces = [cv2.imread(str(path)) for path, _, _ in people]
    by_scenario = {s: [] for s in SCENARIOS}
    switches, ids_per_person, errors = {}, {}, []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        bg = background(rng)
        k, v = 0, 0
        while k < len(people):
            scenario = SCENARIOS[v % len(SCENARIOS)]
            take = 2 if scenario == "crossing" else 1
            if k + take > len(people):
                break
            idx = list(range(k, k + take))
            frames, truth = compose(scenario, [faces[i] for i in idx], background(rng), rng)
            path = Path(tmp) / f"{v}_{scenario}.mp4"
            write_video(path, frames)
            tracks, sw, n_ids, err = run_video(est, path, truth, [people[i] for i in idx])
            for t in tracks:
                t["video"] = v
            by_scenario[scenario].extend(tracks)
            switches.setdefault(scenario, []).append(sw)
            ids_per_person.setdefault(scenario, []).extend(n_ids.values())
            if err:
                errors.append(err)
            k, v = k + take, v + 1
            print(f"video {v} {scenario}: {len(tracks)} tracks, {sw} swaps/fragments ({time.time() - t0:.0f} s)",
                  file=sys.stderr)
        load = os.getloadavg()[0]
        runs = {(n, d): [] for n in (1, 3) for d in (1, 2, 3)}
        for _ in range(3):  # interleaved, medians: the machine is shared
            for key, times in runs.items():
                times.append(speed(est, tmp, faces, bg, rng, *key))
        speeds = {f"{n}_face{'s' if n > 1 else ''}": {f"detect_every_{d}": round(float(np.median(runs[n, d])), 1)
                                                      for d in (1, 2, 3)} for n in (1, 3)}
        speeds["load_average_before"] = round(load, 1)

    all_tracks = [t for ts in by_scenario.values() for t in ts]
    if args.raw:  # per-track frame estimates and true ages (numbers only), for re-analysis
        Path(args.raw).write_text(json.dumps({"by_scenario": by_scenario, "switches": switches,
                                              "ids_per_person": ids_per_person, "speeds": speeds}))

    def stats(tracks):
        if not tracks:
            return None
        frame_err = [abs(f[0] - t["age"]) for t in tracks for f in t["frames"]]
        frame_cov = [f[2] <= t["age"] <= f[3] for t in tracks for f in t["frames"]]
        frame_half = [(f[3] - f[2]) / 2 for t in tracks for f in t["frames"]]
        # per-frame MAE weighted per track, so long tracks do not dominate: the same weighting as the tracks
        frame_mae_tracks = np.mean([np.mean([abs(f[0] - t["age"]) for f in t["frames"]]) for t in tracks])
        track_err = [abs(t["fused"][0] - t["age"]) for t in tracks]
        track_cov = [t["fused"][2] <= t["age"] <= t["fused"][3] for t in tracks]
        gender_frame = [(f[4] >= 0.5) == t["female"] for t in tracks for f in t["frames"] if f[4] is not None]
        gender_track = [(t["fused"][4] >= 0.5) == t["female"] for t in tracks]
        return {"tracks": len(tracks), "scored_frames": len(frame_err),
                "per_frame_mae": round(float(np.mean(frame_err)), 2),
                "per_frame_mae_track_weighted": round(float(frame_mae_tracks), 2),
                "per_track_mae": round(float(np.mean(track_err)), 2),
                "per_frame_coverage90": round(float(np.mean(frame_cov)), 3),
                "per_track_coverage90": round(float(np.mean(track_cov)), 3),
                "per_frame_half_width": round(float(np.mean(frame_half)), 2),
                "per_track_half_width": round(float(np.mean([(t["fused"][3] - t["fused"][2]) / 2 for t in tracks])), 2),
                "per_track_n_eff": round(float(np.mean([t["fused"][5] for t in tracks])), 2),
                "gender_acc_frame": round(float(np.mean(gender_frame)), 3) if gender_frame else None,
                "gender_acc_track": round(float(np.mean(gender_track)), 3)}

    still = by_scenario["still"]
    flicker = {
        "per_frame_std": round(float(np.mean([np.std([f[0] for f in t["frames"]]) for t in still])), 3),
        "tracked_std": round(float(np.mean([np.std(t["shown"]) for t in still])), 3),
        "tracked_std_after_1s": round(float(np.mean([np.std([a for a, tt in zip(t["shown"], t["times"])
                                                             if tt >= t["times"][0] + 1.0] or [0.0])
                                                     for t in still])), 3),
    } if still else None
    grid = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    half_a = [t for t in all_tracks if t["video"] % 2 == 0]
    half_b = [t for t in all_tracks if t["video"] % 2 == 1]
    cov_a = {g: fused_coverage(half_a, g, est) for g in grid}
    # the smallest floor whose coverage on half A is that of no narrowing at all (shared_min = 1)
    fitted = next(g for g in grid if cov_a[g][0] >= cov_a[1.0][0])
    n_eff = [t["fused"][5] for t in all_tracks]
    result = {
        "what": "benchmarks/video_tracking.py: videos composed from UTKFace test photos (utkface_v1), 25 fps 640x480",
        "command": f"python benchmarks/video_tracking.py --people {args.people} --seed {args.seed}",
        "machine": machine.describe(),  # a shared machine: its load average is recorded
        "date": time.strftime("%Y-%m-%d"), "model": est.describe()["model"].split("/")[-1],
        "shared_min": SHARED_MIN, "people": len(people), "videos": v, "source_errors": errors,
        "all": stats(all_tracks), "by_scenario": {s: stats(ts) for s, ts in by_scenario.items()},
        "flicker_still": flicker,
        "identity_swaps": {s: int(sum(a for a, _ in x)) for s, x in switches.items()},
        "track_fragments": {s: int(sum(b for _, b in x)) for s, x in switches.items()},
        "ids_per_person": {s: round(float(np.mean(x)), 2) for s, x in ids_per_person.items()},
        "fusion_rules_coverage90_half_width": {
            "naive_product": [round(x, 3) for x in fused_coverage(all_tracks, "naive", est)],
            "default": [round(x, 3) for x in fused_coverage(all_tracks, SHARED_MIN, est)],
            "no_narrowing": [round(x, 3) for x in fused_coverage(all_tracks, 1.0, est)]},
        "n_eff": {"median": round(float(np.median(n_eff)), 2), "p90": round(float(np.percentile(n_eff, 90)), 2),
                  "max": round(float(np.max(n_eff)), 2)},
        "shared_min_fit": {"grid_coverage_half_a": {str(g): [round(c, 3), round(w, 2)] for g, (c, w) in cov_a.items()},
                           "fitted_on_half_a": fitted,
                           "coverage_half_b_at_fitted": [round(x, 3) for x in fused_coverage(half_b, fitted, est)],
                           "coverage_half_b_at_default": [round(x, 3) for x in fused_coverage(half_b, SHARED_MIN, est)]},
        "fps_640x480": speeds, "seconds": round(time.time() - t0, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
