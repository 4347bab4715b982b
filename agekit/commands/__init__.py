"""Subcommands of the `agekit` CLI, one module each, with `register(subparsers)` adding its parser(s) and
setting `func`.

COMMANDS lists every command name with its module and one-line help, so that `agekit --help` and
`agekit --version` import no command module (nor numpy, OpenCV or torch) and `agekit NAME` imports only
NAME's module. A new command needs its row here (tests/test_install.py checks the table against the
modules' own parsers).
"""

# name -> (module in agekit.commands, one-line help shown by `agekit --help`); in the order --help lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "train and evaluate many methods under one protocol; write a results table"),
    "check": ("check", "age check: is each face over a minimum age (over/under/uncertain)"),
    "data": ("data", "inspect and verify datasets"),
    "eval": ("eval", "evaluate a checkpoint or an exported ONNX model: metrics, Markdown report, plots"),
    "explain": ("explain", "heat maps of the face regions that move each age estimate, and its distribution"),
    "saliency": ("explain", "mean saliency per age band over a dataset split, and the deletion check"),
    "export": ("export", "turn a checkpoint into an ONNX model for agekit predict"),
    "methods": ("methods", "list the registered age-estimation methods"),
    "np-demo": ("np", "train neural processes (CNP, NP, ANP) on random sine functions"),
    "np-faces": ("np_faces", "evaluate the personalised face NP on FG-NET (leave one person out)"),
    "np-bank": ("np_faces", "fit the face NP on all FG-NET subjects and save it for personalised prediction"),
    "predict": ("predict", "estimate the age and gender of the faces in photos"),
    "serve": ("serve", "run the HTTP service and its web page (FastAPI + uvicorn)"),
    "train": ("train", "train an age estimator from a YAML config"),
}
