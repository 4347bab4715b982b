"""Face detection: find every face with its box, 5 landmarks and score, behind one small interface.

See `agekit.detect.base` for the interface and docs/detectors.md for how the default was chosen.
"""
from agekit.detect.base import (
    DEFAULT_DETECTOR,
    Detector,
    Face,
    create_detector,
    describe_detectors,
    detect_with_rotation,
    face_roll,
    list_detectors,
    register_detector,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "Face",
    "create_detector",
    "describe_detectors",
    "detect_with_rotation",
    "face_roll",
    "list_detectors",
    "register_detector",
]
