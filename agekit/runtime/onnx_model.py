"""An exported agekit model (ONNX + metadata) run with onnxruntime.

The file's metadata_props key "agekit" holds a JSON document (format "agekit-onnx-v1", see docs/predict.md)
with the crop rule(s), age range, gender head, calibration and provenance. Inputs: one float32 tensor per
crop view, "image" (N, 3, S, S) RGB in [0, 1] (extra views: "image_1", ...). Outputs: "probs" (N, K) over
the integer ages age_min..age_max, "age" (N,), "std" (N,), "gender" (N,) = P(female) when the model has a
gender head, and "embedding" (N, F), the backbone features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agekit.crop import CropSpec
from agekit.errors import AgekitError
from agekit.onnx_session import make_session

FORMAT = "agekit-onnx-v1"
METADATA_KEY = "agekit"
DEFAULT_MODEL_NAME = "agekit-default.onnx"
# Models the package ships, by the name users give them (--model fast): files in agekit/weights/.
PACKAGED_MODELS = {"default": DEFAULT_MODEL_NAME, "fast": "agekit-fast.onnx"}


def default_model_path(name: str = "default") -> Path:
    """Where a packaged model lives (default: agekit/weights/agekit-default.onnx)."""
    return Path(__file__).resolve().parents[1] / "weights" / PACKAGED_MODELS[name]


def is_packaged_name(model) -> bool:
    """True for a packaged model's name ("default", "fast") that is not also a file in the working folder
    (a user's file of that name wins)."""
    return isinstance(model, str) and model in PACKAGED_MODELS and not Path(model).exists()


def resolve_model(model) -> Path:
    """A model argument as a path: None or a packaged name -> its packaged file; a path (str or Path) as
    given."""
    if model is None:
        return default_model_path()
    if is_packaged_name(model):
        return default_model_path(model)
    return Path(model).expanduser()


def view_input_name(i: int) -> str:
    return "image" if i == 0 else f"image_{i}"


class OnnxAgeModel:
    """Load an agekit ONNX model; `run(views)` maps uint8 crops to predictions.

    Attributes: path, meta (the "agekit" metadata dict), views (CropSpec per input view), ages (K,) array,
    age_min, age_max, has_gender, calibration (dict or None).
    """

    def __init__(self, path=None, threads: int | None = None):
        packaged = path is None or is_packaged_name(path)
        path = resolve_model(path)
        if packaged and not path.is_file():
            raise AgekitError(f"the packaged model is missing ({path}); pass a model file with "
                              "--model / AgeEstimator(model=...), made with `agekit export CHECKPOINT --onnx`")
        self.path = path
        if not self.path.is_file():
            raise AgekitError(f"model file not found: {self.path}")
        try:
            self.session = make_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AgekitError(f"{self.path}: not a readable ONNX model ({msg})") from None
        self.meta = read_metadata(self.session, self.path)
        self.views = [CropSpec(**v) for v in self.meta["views"]]
        self.age_min, self.age_max = int(self.meta["age_min"]), int(self.meta["age_max"])
        self.ages = np.arange(self.age_min, self.age_max + 1, dtype=np.float64)
        self.has_gender = bool(self.meta.get("gender"))
        self.calibration = self.meta.get("calibration") or None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected = [view_input_name(i) for i in range(len(self.views))]
        if self.input_names != expected:
            raise AgekitError(f"{self.path}: model inputs {self.input_names} do not match its metadata "
                              f"({len(self.views)} view(s): {expected})")

    @property
    def input_size(self) -> int:
        return self.views[0].size

    def run(self, views, batch_size: int = 64) -> dict:
        """Predict for crops: `views` is one uint8 array (N, S, S, 3) per input view (or one array for a
        single-view model). Returns numpy arrays 'probs' (N, K), 'age' (N,), 'std' (N,), 'embedding' (N, F)
        and 'gender' (N,) = P(female) when the model has a gender head."""
        views = [views] if isinstance(views, np.ndarray) else list(views)
        if len(views) != len(self.views):
            raise AgekitError(f"model takes {len(self.views)} crop view(s), got {len(views)}")
        n = len(views[0])
        for arr, spec in zip(views, self.views):
            arr = np.asarray(arr)
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (spec.size, spec.size, 3) or len(arr) != n:
                raise AgekitError(f"crops must be uint8 ({n}, {spec.size}, {spec.size}, 3), got "
                                  f"{arr.dtype} {tuple(arr.shape)}")
        if n == 0:
            k, empty = len(self.ages), np.zeros(0, np.float32)
            out = {"probs": np.zeros((0, k), np.float32), "age": empty, "std": empty,
                   "embedding": np.zeros((0, int(self.meta.get("embedding_size", 0))), np.float32)}
            if self.has_gender:
                out["gender"] = empty
            return out
        parts: dict[str, list] = {name: [] for name in self.output_names}
        for start in range(0, n, batch_size):
            feed = {view_input_name(i): to_nchw(v[start:start + batch_size]) for i, v in enumerate(views)}
            for name, value in zip(self.output_names, self.session.run(self.output_names, feed)):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}


def to_nchw(crops: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float32 (N, 3, S, S) in [0, 1]."""
    return np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def read_metadata(session, path) -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise AgekitError(f"{path}: not an agekit model (no '{METADATA_KEY}' metadata); make one with "
                          "`agekit export CHECKPOINT --onnx OUT.onnx`")
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        raise AgekitError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise AgekitError(f"{path}: unsupported agekit model format {meta.get('format')!r} (expected {FORMAT})")
    return meta
