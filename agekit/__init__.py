"""agekit: facial age and gender estimation toolkit."""

__version__ = "0.1.0"

__all__ = ["AgeEstimator", "FaceResult", "__version__"]


def __getattr__(name):
    # Lazy: `import agekit` stays light, and `from agekit import AgeEstimator` loads only the torch-free
    # runtime (onnxruntime, OpenCV, numpy).
    if name in ("AgeEstimator", "FaceResult"):
        import agekit.runtime

        return getattr(agekit.runtime, name)
    raise AttributeError(f"module 'agekit' has no attribute {name!r}")
