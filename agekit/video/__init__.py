"""Video, webcam and streams: faces followed by a tracker, one steady age per person (docs/video.md).

    from agekit import AgeEstimator
    run = AgeEstimator().track("clip.mp4")      # a path, camera index, stream URL or list of frames
    for frame in run:                           # FrameResult: frame.index, frame.time, frame.faces
        for face in frame.faces:                # TrackedFace: face.track, face.box, face.fused.age
            ...
    for person in run.summaries():              # TrackSummary: track, first, last, age, interval, gender
        print(person.to_dict())

The tracker comes from the `video` extra (pip install 'agekit[video]'); it is imported on first use.
"""
from agekit.video.fusion import SHARED_MIN, Fused, fuse_ages, fuse_gender
from agekit.video.source import VideoError, is_stream_url, is_video_path, open_source
from agekit.video.tracking import (
           FrameResult,
           TrackedFace,
           TrackRun,
           TrackSummary,
           VideoTracker,
           track,
)

__all__ = [
           "SHARED_MIN",
           "FrameResult",
           "Fused",
           "TrackRun",
           "TrackSummary",
           "TrackedFace",
           "VideoError",
           "VideoTracker",
           "fuse_ages",
           "fuse_gender",
           "is_stream_url",
           "is_video_path",
           "open_source",
           "track",
]
