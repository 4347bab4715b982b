"""OpenCV's YuNet face detector (cv2.FaceDetectorYN) from a model file the user supplies.

YuNet (Wu et al. 2023, MIT, from the OpenCV Zoo) gives a box, 5 landmarks and a score per face. No
registry package ships its .onnx file, so it cannot be the default: pass the path explicitly,

    create_detector("yunet", model_path="face_detection_yunet_2023mar.onnx")

The OpenCV 4.x builds accept the fixed-shape 2023mar file; OpenCV 5.x's ONNX engine may need a variant with
dynamic input shape. YuNet's landmark order (right eye, left eye, nose, right/left mouth corner of the
person) is the same as ours (image-left eye first for a frontal face). cv2 wants BGR, so the RGB input is
converted.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agekit.detect.base import Detector, Face
from agekit.errors import AgekitError


class YuNetDetector(Detector):
    """Options: model_path (required, a face_detection_yunet*.onnx file), threshold (default 0.6),
    nms (IoU, default 0.3), top_k (candidates before NMS, default 5000), min_face, max_faces."""

    name = "yunet"
    default_threshold = 0.6

    def __init__(self, model_path=None, threshold: float | None = None, min_face: float = 0,
                 max_faces: int | None = None, nms: float = 0.3, top_k: int = 5000):
        super().__init__(threshold=threshold, min_face=min_face, max_faces=max_faces)
        if model_path is None or str(model_path) == "":
            raise AgekitError("face detector 'yunet' needs model_path=PATH to a face_detection_yunet*.onnx file "
                              "(no package ships it; get it from the OpenCV Zoo)")
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise AgekitError(f"YuNet model file not found: {path}")
        self.model_path = path
        try:
            # The detector itself keeps every candidate >= threshold; `detect()` filters again.
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), float(self.threshold), float(nms),
                                                  int(top_k))
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise AgekitError(f"{path}: cannot load as a YuNet model ({msg})") from None

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        self._net.setInputSize((w, h))
        _, rows = self._net.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float64).reshape(-1, 15):
            x, y, bw, bh = row[:4]
            faces.append(Face(box=(x, y, x + bw, y + bh), landmarks=row[4:14].reshape(5, 2), score=row[14]))
        return faces
