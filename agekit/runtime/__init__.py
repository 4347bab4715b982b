"""Torch-free inference: ONNX models exported by `agekit export`, run with onnxruntime, OpenCV and numpy.

    from agekit.runtime import AgeEstimator
    faces = AgeEstimator().predict("photo.jpg")

Modules: estimator (AgeEstimator), results (FaceResult), onnx_model (OnnxAgeModel, the file format),
calibration (split-conformal intervals, pure numpy), crops (model input crops), quality (small/blurry
flags), quantize (int8), annotate (drawing), cli (shared by `agekit predict` and `agekit check`),
face_np (the face NP bank), personal (Personalizer), context (context photos and ages.csv).
Nothing here imports torch (tests/test_runtime_import.py checks it); see docs/predict.md.
"""
import importlib

_EXPORTS = {"AgeEstimator": "estimator", "FaceResult": "results", "OnnxAgeModel": "onnx_model",
            "default_model_path": "onnx_model"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # lazy, so that `agekit --help` (which registers predict/check from agekit.runtime.cli) stays quick
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"agekit.runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'agekit.runtime' has no attribute {name!r}")
