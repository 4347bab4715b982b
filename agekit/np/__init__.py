"""Neural processes (CNP, latent NP, attentive NP) for set-conditioned regression, with a sine-function
testbed. Models take inputs x of any dimension d_x and outputs y of dimension d_y; see `agekit.np.models`.
Background and measured numbers: docs/neural_processes.md. Requires torch."""
from agekit.np.models import MODELS, AttentiveNP, ConditionalNP, LatentNP, NeuralProcess, build_model
from agekit.np.sine import NPBatch, SineSampler, SineTask
from agekit.np.train import evaluate, prior_log_likelihood, train_model

__all__ = ["MODELS", "AttentiveNP", "ConditionalNP", "LatentNP", "NeuralProcess", "build_model", "NPBatch",
           "SineSampler", "SineTask", "evaluate", "prior_log_likelihood", "train_model"]
