"""Neural processes (CNP, latent NP, attentive NP) for set-conditioned regression, with a sine-function
testbed. Models take inputs x of any dimension d_x and outputs y of dimension d_y; see `agekit.np.models`.
Background and measured numbers: docs/neural_processes.md. The 1-D models require torch.

The multi-task NP for faces is in `agekit.np.faces` (inference and `Personalizer`: numpy only),
`agekit.np.faces_train` (fitting, torch) and `agekit.np.faces_eval` (the FG-NET evaluation). The names below
are imported on first use, so `import agekit.np.faces` does not pull in torch.
"""
import importlib

_EXPORTS = {
    "MODELS": "agekit.np.models", "AttentiveNP": "agekit.np.models", "ConditionalNP": "agekit.np.models",
    "LatentNP": "agekit.np.models", "NeuralProcess": "agekit.np.models", "build_model": "agekit.np.models",
    "NPBatch": "agekit.np.sine", "SineSampler": "agekit.np.sine", "SineTask": "agekit.np.sine",
    "evaluate": "agekit.np.train", "prior_log_likelihood": "agekit.np.train", "train_model": "agekit.np.train",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agekit.np' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
