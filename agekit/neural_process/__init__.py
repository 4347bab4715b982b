"""Neural processes (CNP, latent NP, attentive NP) for set-conditioned regression, with a sine-function
testbed (`agekit np-demo`). Models take inputs x of any dimension d_x and outputs y of dimension d_y; see
`agekit.neural_process.models`. Background and measured numbers: docs/neural_processes.md. Needs torch.

The face NP used for personalised ages is elsewhere: its model and inference in `agekit.runtime.face_np` and
`agekit.runtime.personal` (numpy only), its fitting and evaluation in `agekit.personalise`.
"""
from agekit.neural_process.models import MODELS, AttentiveNP, ConditionalNP, LatentNP, NeuralProcess, build_model
from agekit.neural_process.sine import NPBatch, SineSampler, SineTask
from agekit.neural_process.train import evaluate, prior_log_likelihood, train_model

__all__ = ["MODELS", "AttentiveNP", "ConditionalNP", "LatentNP", "NeuralProcess", "build_model", "NPBatch",
           "SineSampler", "SineTask", "evaluate", "prior_log_likelihood", "train_model"]
