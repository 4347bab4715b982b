"""Video sources: files (any format OpenCV's FFmpeg reads), cameras and stream URLs, read frame by frame.

A source yields (index, time in seconds, RGB frame). Files (and streams that have a length, such as an
http URL of a video file) are timed by their frame rate (index / fps); cameras and live streams by the clock. Problems are one-line AgekitErrors naming the source:
- before the first frame (missing or empty file, not a video, a camera or URL that cannot be opened, no frame
  decodable): VideoError from `open_source`, nothing read;
- after some frames (a truncated or corrupt file, a stream that drops): iteration stops and `source.error`
  says what happened and where; the frames read so far have been used.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.runtime.estimator import as_image

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ts", ".mts", ".m2ts", ".ogv", ".mjpeg", ".mjpg", ".y4m", ".vob", ".asf"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
OPEN_TIMEOUT_MS = 10_000  # a stream that sends nothing for this long is dropped
# A file whose decoding stops this many frames or more before the count in its header is reported truncated.
TRUNCATED_SLACK = 2


# FFmpeg's own messages ("[mov @ 0x...] moov atom not found") would repeat, less clearly, the one-line errors
# below: OpenCV passes this level to FFmpeg's logger when its FFmpeg backend starts (-8: quiet).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class VideoError(AgekitError):
    """A video source that cannot be used at all."""


def is_stream_url(text: str) -> bool:
    return str(text).lower().startswith(STREAM_SCHEMES)


def is_video_path(text) -> bool:
    """A path or URL that names a video by its extension (or is a stream URL other than a plain http(s) file)."""
    s = str(text)
    if s.lower().startswith(("rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "srt://")):
        return True
    suffix = Path(s.split("?", 1)[0]).suffix.lower()
    return suffix in VIDEO_EXTENSIONS


class VideoSource:
    """Frames of a file, camera or stream. Use `open_source`."""

    def __init__(self, capture, name: str, kind: str, first: np.ndarray, max_seconds: float | None = None):
        self.capture, self.name, self.kind = capture, name, kind
        self.max_seconds = max_seconds
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < self.fps < 1000):
            self.fps = 0.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # a file, or a stream that is a file (an http URL of an .mp4): it has a length, and its own clock; a file
        # without a length in its header (a raw .mjpeg or .h264) still has its own clock
        self.frame_count = count if kind != "camera" and count > 0 else None
        self.timed_by_fps = (self.frame_count is not None or kind == "file") and self.fps > 0
        self.height, self.width = first.shape[:2]
        self._first = first
        self.error: str | None = None   # why reading stopped early, if it did
        self.frames_read = 0

    @property
    def expected_frames(self) -> int | None:
        """Frames this run will read if nothing goes wrong (None: unknown, a camera or stream)."""
        if self.frame_count is None:
            return None
        if self.max_seconds is not None and self.fps:
            return min(self.frame_count, int(self.max_seconds * self.fps) + 1)
        return self.frame_count

    def __iter__(self):
        start = time.monotonic()
        index, frame = 0, self._first
        self._first = None
        try:
            while frame is not None:
                t = index / self.fps if self.timed_by_fps else time.monotonic() - start
                if self.max_seconds is not None and t > self.max_seconds:
                    return
                self.frames_read = index + 1
                yield index, t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
                ok, frame = self.capture.read()
                if not ok or frame is None:
                    frame = None
                    self._ended(index)
        finally:
            self.capture.release()

    def _ended(self, frames: int) -> None:
        if self.frame_count is not None:
            if frames + TRUNCATED_SLACK <= self.frame_count:
                cause = "truncated or corrupt" if self.kind == "file" else "truncated, corrupt or the connection dropped"
                self.error = (f"the video stops after frame {frames} of {self.frame_count} ({cause}); "
                              f"results up to there are kept")
        elif self.kind == "file":
            pass  # no length to compare with: the end of the file is its end
        elif self.kind == "stream":
            self.error = f"the stream stopped after {frames} frames; results up to there are kept"
        else:
            self.error = f"the camera stopped sending frames after {frames}; results up to there are kept"


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV's warnings while opening a camera or file ("can't open camera by index") go unsaid: the error
    raised here says it in one line. The caller's log level is restored after."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    old = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        if log is not None:
            log.setLogLevel(old)


def _capture(target, kind: str):
    with _quiet_opencv():
        if kind == "camera":
            return cv2.VideoCapture(int(target))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        try:
            return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, params)
        except (TypeError, cv2.error):  # an OpenCV without the params overload
            return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG)


def open_source(source, max_seconds: float | None = None) -> VideoSource:
    """A VideoSource for a file path, a camera index (int, or "camera:N") or a stream URL, with its first
    frame already decoded; VideoError (one line naming the source) when that fails."""
    if isinstance(source, int) or (isinstance(source, str) and source.startswith("camera:")):
        index = int(str(source).split(":", 1)[-1])
        kind, name, target = "camera", f"camera {index}", index
    elif is_stream_url(str(source)):
        kind, name, target = "stream", str(source), str(source)
    else:
        path = Path(source).expanduser()
        kind, name, target = "file", str(source), path
        if not path.exists():
            raise VideoError(f"{name}: no such file")
        if path.is_dir():
            raise VideoError(f"{name}: is a folder, not a video")
        if os.path.getsize(path) == 0:
            raise VideoError(f"{name}: the file is empty (0 bytes)")
    if max_seconds is not None and max_seconds <= 0:
        raise AgekitError(f"--max-seconds must be > 0, got {max_seconds}")
    capture = _capture(target, kind)
    if not capture.isOpened():
        capture.release()
        why = {"file": "not a video that OpenCV/FFmpeg can read",
               "camera": "cannot open it (no such camera, or no permission)",
               "stream": "cannot connect or not a video stream"}[kind]
        raise VideoError(f"{name}: {why}")
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise VideoError(f"{name}: no frame could be decoded (corrupt or not a video)")
    return VideoSource(capture, name, kind, first, max_seconds)


class FrameSource:
    """Frames given by the caller (a list or iterator of RGB arrays) as a source; timed at `fps`."""

    kind = "frames"

    def __init__(self, frames, fps: float = 30.0, name: str = "frames"):
        self.frames, self.fps, self.name = frames, float(fps), name
        self.error = None
        self.frame_count = len(frames) if hasattr(frames, "__len__") else None
        self.expected_frames = self.frame_count
        self.frames_read = 0

    def __iter__(self):

        for index, frame in enumerate(self.frames):
            self.frames_read = index + 1
            yield index, index / self.fps, as_image(frame)


# Photo extensions never probed as videos (an animated GIF stays a photo, as before).
IMAGE_LIKE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jfif",
              ".heic", ".heif", ".hif", ".avif"}


def probe_video(path) -> bool:
    """A local file without a photo or video extension that OpenCV/FFmpeg opens as more than one frame."""
    s = str(path)
    if "://" in s or s == "-":
        return False
    p = Path(s).expanduser()
    if p.suffix.lower() in IMAGE_LIKE or p.suffix.lower() in VIDEO_EXTENSIONS or not p.is_file():
        return False
    try:
        if os.path.getsize(p) == 0:
            return False
        capture = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        try:
            return bool(capture.isOpened()) and int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) > 1
        finally:
            capture.release()
    except (cv2.error, OSError):
        return False
