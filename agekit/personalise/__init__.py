"""Building and evaluating the face NP bank that personalises ages (`agekit np-bank`, `agekit np-faces`).

Modules: features (encoder features of FG-NET photos from a checkpoint or an ONNX model), fit (`fit_face_np`:
torch + scipy), evaluate (leave-one-person-out on FG-NET with its baselines), report (results.json,
results.md, mae_vs_k.png). The model and its use at prediction time are in the runtime, numpy only:
`agekit.runtime.face_np` (the model and its .npz file) and `agekit.runtime.personal` (`Personalizer`).
This package sits above agekit/engine (a checkpoint encoder is loaded through it). See
docs/neural_processes.md.
"""
