"""Faces followed through a video: detection, ByteTrack (the `trackers` package), per-frame scoring and a
steady per-person age (agekit.video.fusion).

Per analysed frame (every `every`-th frame of the source):
- every `detect_every`-th analysed frame the face detector runs and ByteTrack (trackers.ByteTrackTracker,
  timed by the frames' times, so skipped frames are handled as elapsed time) links its boxes to tracks;
  between detections each live track keeps its last box (shown, not scored);
- a tracked face is scored by the age model on a detection frame when its track has fewer than
  SETTLE_FRAMES scored frames and its last scoring is at least `min_gap` seconds old, and once settled only
  every `rescore_seconds` (the fused estimate then barely moves: see fusion.py); all faces of a frame that
  need scoring go through the model in one call;
- every tracked face is reported with its track id and its track's fused (steady) estimate so far.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from agekit.errors import AgekitError
from agekit.runtime import estimator as runtime
from agekit.video.fusion import SHARED_MIN, Fused, TrackEvidence
from agekit.video.source import FrameSource, open_source

DETECT_EVERY = 2        # analysed frames per detector run (tracking carries the boxes in between)
MIN_GAP = 0.0           # seconds between two scorings of one track while it is settling
SETTLE_FRAMES = 15      # scored frames after which a track's estimate counts as settled
RESCORE_SECONDS = 1.0   # a settled track is scored again this often
LOST_SECONDS = 1.0      # a track unseen for this long is ended (a face that comes back gets a new id)


def _bytetrack(fps: float, lost_seconds: float):
    try:
        from trackers import ByteTrackTracker
    except ModuleNotFoundError:
        raise AgekitError("video needs the face tracker: pip install 'agekit[video]' (the `trackers` package)") \
            from None
    return ByteTrackTracker(lost_track_buffer=max(1, round(lost_seconds * 30)), frame_rate=fps or 30.0,
                            track_activation_threshold=0.5, minimum_consecutive_frames=1,
                            minimum_iou_threshold=0.1, high_conf_det_threshold=0.5)


def _detections(faces):
    import supervision as sv

    if not faces:
        return sv.Detections.empty()
    return sv.Detections(xyxy=np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4),
                         confidence=np.array([f.score for f in faces], dtype=np.float32),
                         data={"index": np.arange(len(faces))})


def _r(v, digits=2):
    return None if v is None else round(float(v), digits)


@dataclass
class TrackedFace:
    """One face in one frame. box: (x1, y1, x2, y2) pixels; detected: found by the detector in this frame
    (False: the track's last box, carried); frame: the model's FaceResult for this frame when it was scored,
    else None; fused: the track's steady estimate so far (None until its first scoring)."""

    track: int
    box: tuple
    detected: bool
    frame: object = None
    fused: Fused | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    flags: list = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"track": self.track, "box": [_r(v, 1) for v in self.box], "detected": self.detected,
               "scored": self.frame is not None}
        if self.frame is not None:
            out.update(frame_age=_r(self.frame.age), frame_std=_r(self.frame.std),
                       frame_female_prob=_r(self.frame.female_prob, 4), flags=list(self.frame.flags))
        if self.fused is not None:
            f = self.fused
            out.update(age=_r(f.age), std=_r(f.std), interval=[_r(f.interval[0]), _r(f.interval[1])],
                       gender=f.gender, gender_prob=_r(f.gender_prob, 4), frames_used=f.frames)
        return out


@dataclass
class FrameResult:
    """The tracked faces of one analysed frame; index counts the source's frames, time is in seconds."""

    index: int
    time: float
    faces: list
    detected: bool

    def to_dict(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 3), "detected": self.detected,
                "faces": [f.to_dict() for f in self.faces]}


@dataclass
class TrackSummary:
    """One person (track): first/last time seen (s), frames seen, frames scored and kept in the estimate
    (frames_used), the fused age, std, interval, gender; n_eff = effective independent frames."""

    track: int
    first: float
    last: float
    frames: int
    frames_used: int
    age: float | None
    std: float | None
    interval: tuple | None
    level: float
    gender: str | None
    gender_prob: float | None
    female_prob: float | None
    n_eff: float | None

    def to_dict(self) -> dict:
        return {"track": self.track, "first": round(self.first, 3), "last": round(self.last, 3),
                "frames": self.frames, "frames_used": self.frames_used, "age": _r(self.age), "std": _r(self.std),
                "interval": None if self.interval is None else [_r(self.interval[0]), _r(self.interval[1])],
                "level": self.level, "gender": self.gender, "gender_prob": _r(self.gender_prob, 4),
                "female_prob": _r(self.female_prob, 4), "n_eff": _r(self.n_eff)}


class _Track:
    def __init__(self, tid: int, t: float):
        self.id, self.first, self.last = tid, t, t
        self.frames = 0
        self.evidence = TrackEvidence()
        self.last_scored: float | None = None
        self.box = self.landmarks = None
        self.fused: Fused | None = None
        self.seen_at = -1  # the detection round it was last matched in


class VideoTracker:
    """Feeds frames (index, time, RGB array) through detection, tracking and scoring; `step` returns the
    frame's FrameResult (None for frames skipped by `every`), `summaries()` one TrackSummary per track."""

    def __init__(self, estimator, fps: float = 30.0, every: int = 1, detect_every: int = DETECT_EVERY,
                 min_gap: float = MIN_GAP, settle_frames: int = SETTLE_FRAMES,
                 rescore_seconds: float = RESCORE_SECONDS, lost_seconds: float = LOST_SECONDS,
                 shared_min: float = SHARED_MIN):
        for name, value in (("every", every), ("detect_every", detect_every)):
            if int(value) < 1:
                raise AgekitError(f"{name} must be >= 1, got {value}")
        self.est = estimator
        self.every, self.detect_every = int(every), int(detect_every)
        self.min_gap, self.settle_frames, self.rescore_seconds = float(min_gap), int(settle_frames), rescore_seconds
        self.shared_min = float(shared_min)
        self.tracker = _bytetrack(fps, lost_seconds)
        self.tracks: dict[int, _Track] = {}
        self.analysed = 0
        self.rounds = 0
        self.last: FrameResult | None = None

    # ---- one frame ---------------------------------------------------------------------------------------
    def step(self, index: int, t: float, frame: np.ndarray) -> FrameResult | None:
        if index % self.every:
            return None
        detect = self.analysed % self.detect_every == 0
        self.analysed += 1
        if detect:
            faces = self._detect(t, frame)
        else:
            faces = [TrackedFace(tr.id, tr.box, False, None, tr.fused)
                     for tr in self.tracks.values() if tr.seen_at == self.rounds and tr.box is not None]
        for f in faces:
            tr = self.tracks[f.track]
            tr.frames += 1
            tr.last = t
        self.last = FrameResult(index, t, faces, detect)
        return self.last

    def _detect(self, t: float, frame: np.ndarray) -> list[TrackedFace]:
        found = self.est.detector.detect(frame)
        self.rounds += 1
        tracked = self.tracker.update(_detections(found), timestamp=t)
        out, to_score = [], []
        for k, tid in enumerate(tracked.tracker_id):
            if tid < 0:
                continue  # a weak detection that continues no track
            face = found[int(tracked.data["index"][k])]
            tr = self.tracks.get(int(tid))
            if tr is None:
                tr = self.tracks[int(tid)] = _Track(int(tid), t)
            tr.box, tr.landmarks, tr.seen_at = tuple(float(v) for v in face.box), face.landmarks, self.rounds
            tf = TrackedFace(tr.id, tr.box, True, landmarks=face.landmarks)
            out.append(tf)
            if self._due(tr, t):
                to_score.append((tf, tr, face))
        if to_score:
            results = self._score(frame, [face for _, _, face in to_score])
            for (tf, tr, _), res in zip(to_score, results):
                tf.frame, tf.flags = res, list(res.flags)
                tr.evidence.add(res)
                tr.last_scored = t
                tr.fused = self._fuse(tr)
        for tf in out:
            tf.fused = self.tracks[tf.track].fused
        return out

    def _due(self, tr: _Track, t: float) -> bool:
        if tr.last_scored is None:
            return True
        gap = t - tr.last_scored
        if len(tr.evidence) < self.settle_frames:
            return gap >= self.min_gap
        return gap >= self.rescore_seconds

    def _score(self, frame: np.ndarray, faces) -> list:
        """FaceResults of detected faces, cropped by their landmarks (the photo path's crop), in one model call."""

        est = self.est
        prepared = []
        for f in faces:
            crops, mag = runtime.face_crops(frame, est.model.views, landmarks=f.landmarks)
            prepared.append(runtime._Face(crops, f.box, f.landmarks, f.score, 0, "landmarks",
                                          runtime.quality_flags(crops[0], mag)))
        return est._score(prepared)

    def _fuse(self, tr: _Track) -> Fused | None:
        est = self.est
        return tr.evidence.fuse(est.level, est.calibration, est.q, float(est.model.age_min),
                                float(est.model.age_max), self.shared_min)

    # ---- the run's answer -------------------------------------------------------------------------------
    def summaries(self) -> list[TrackSummary]:
        out = []
        for tr in sorted(self.tracks.values(), key=lambda tr: (tr.first, tr.id)):
            f = tr.fused
            out.append(TrackSummary(
                tr.id, tr.first, tr.last, tr.frames, 0 if f is None else f.frames, None if f is None else f.age,
                None if f is None else f.std, None if f is None else f.interval, self.est.level,
                None if f is None else f.gender, None if f is None else f.gender_prob,
                None if f is None else f.female_prob, None if f is None else f.n_eff))
        return out


class TrackRun:
    """`AgeEstimator.track(...)`: iterate it for the FrameResults (one per analysed frame, as they are made);
    then `summaries()` gives one TrackSummary per track (also during the run: the tracks so far), `error` why
    the source stopped early (a truncated file, a dropped stream; None when it ended normally) and `source`
    the VideoSource (name, fps, width, height, frames_read). `run()` consumes it and returns the summaries."""

    def __init__(self, estimator, source, fps: float | None = None, max_seconds: float | None = None, **options):

        if isinstance(source, (int, str, os.PathLike)):
            self.source = open_source(source if isinstance(source, int) else os.fspath(source), max_seconds)
        else:
            self.source = FrameSource(source, fps or 30.0)
        self.tracker = VideoTracker(estimator, fps=fps or self.source.fps or 30.0, **options)
        self._started = False

    @property
    def error(self) -> str | None:
        return self.source.error

    def __iter__(self):
        if self._started:
            raise AgekitError("a TrackRun can be iterated once; call track() again for another pass")
        self._started = True
        for index, t, frame in self.source:
            result = self.tracker.step(index, t, frame)
            if result is not None:
                yield result

    def frames(self):
        """(index, time, RGB frame, FrameResult or None for a frame skipped by `every`) of every frame read:
        for drawing every frame of an annotated video."""
        self._started = True
        for index, t, frame in self.source:
            yield index, t, frame, self.tracker.step(index, t, frame)

    def summaries(self) -> list[TrackSummary]:
        return self.tracker.summaries()

    def run(self) -> list[TrackSummary]:
        for _ in self:
            pass
        return self.summaries()


def track(estimator, source, **options) -> TrackRun:
    """Follow the faces of a video file (path), camera (int index), stream URL or sequence of RGB frames
    (numpy arrays, PIL images or paths: timed at `fps`, default 30). Options: every, detect_every, min_gap,
    settle_frames, rescore_seconds, lost_seconds, max_seconds (files and streams), fps, shared_min."""
    return TrackRun(estimator, source, **options)
