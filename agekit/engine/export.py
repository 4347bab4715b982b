"""Checkpoint -> ONNX model for the torch-free runtime (agekit.runtime), with calibration and int8.

    export_checkpoint("runs/x/best.pt", "model.onnx", calibrate="val", quantize=None)

The graph takes one input per crop view, "image" (N, 3, S, S) float32 RGB in [0, 1] (extra views of a
multi-input model: "image_1", ...; normalisation is inside), and outputs "probs" (N, K) over the integer ages
age_min..age_max, "age" (N,) and "std" (N,) (the method's own decoder), "gender" (N,) = P(female) when there
is a gender head, and "embedding" (N, F), the pooled backbone features. The batch axis is dynamic. The
metadata_props key "agekit" holds the JSON described in docs/predict.md.

Calibration (split-conformal, agekit.runtime.calibration) and the int8 accuracy cost are measured with the
exported model itself under onnxruntime on the checkpoint's validation split, so they describe exactly the
file that is written (an int8 model is calibrated on its own predictions).
"""
from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agekit import __version__
from agekit.engine.checkpoint import load_model
from agekit.errors import AgekitError
from agekit.io import atomic_path
from agekit.onnx_session import make_session
from agekit.runtime.calibration import DEFAULT_LEVEL, calibrate
from agekit.runtime.onnx_model import FORMAT, METADATA_KEY, to_nchw, view_input_name
from agekit.runtime.quantize import quantization_cost, quantize_model

log = logging.getLogger(__name__)
OPSET = 17
CALIBRATE_CHOICES = ("val", "none")
QUANTIZE_CHOICES = ("int8", "int8-dynamic")


class ExportWrapper(nn.Module):
    """AgeModel -> (probs, age, std[, gender], embedding) on float crops in [0, 1]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *views):
        features = self.model.features(list(views) if len(views) > 1 else views[0])
        out = self.model.heads(features)
        dist = self.model.method.decode(out["age"])
        outputs = [dist.probs.float(), dist.mean.float(), dist.std.float()]
        if "gender" in out:
            outputs.append(torch.softmax(out["gender"].float(), dim=1)[:, 1])
        outputs.append(features.float())
        return tuple(outputs)


def output_names(gender: bool) -> list[str]:
    return ["probs", "age", "std"] + (["gender"] if gender else []) + ["embedding"]


def onnx_bytes(model, sizes: list[int], gender: bool) -> bytes:
    """Trace the model into ONNX (TorchScript exporter: fast, and folds BatchNorm into the convolutions)."""
    wrapper = ExportWrapper(model).eval()
    inputs = [view_input_name(i) for i in range(len(sizes))]
    outputs = output_names(gender)
    dummy = tuple(torch.rand(2, 3, s, s) for s in sizes)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        kwargs = dict(input_names=inputs, output_names=outputs, opset_version=OPSET, do_constant_folding=True,
                      dynamic_axes={name: {0: "batch"} for name in inputs + outputs})
        try:
            torch.onnx.export(wrapper, dummy, buffer, dynamo=False, **kwargs)
        except TypeError:  # torch without the `dynamo` argument
            torch.onnx.export(wrapper, dummy, buffer, **kwargs)
    return buffer.getvalue()


def require_onnx():
    """The `onnx` package (metadata, int8 quantisation), which the predict-only install leaves out."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise AgekitError("agekit export needs the 'onnx' package (not part of the predict-only install); "
                          "install it with: python -m pip install onnx") from None
    return onnx


def with_metadata(model_bytes: bytes, meta: dict) -> bytes:
    onnx = require_onnx()

    proto = onnx.load_from_string(model_bytes)
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == METADATA_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=False, default=_json_default)
    proto.producer_name, proto.producer_version = "agekit", __version__
    return proto.SerializeToString()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def base_metadata(payload: dict, checkpoint, model) -> dict:
    spec, cfg = payload["inference"], payload["config"]
    d = cfg.get("data", {})
    views = spec.get("views") or [spec["crop"]]
    landmarks = spec.get("landmarks", d.get("landmarks", "dataset"))
    detector = spec.get("detector", d.get("detector")) if landmarks == "detect" else None
    return {
        "format": FORMAT,
        "agekit_version": __version__,
        "inputs": [view_input_name(i) for i in range(len(views))],
        "outputs": output_names(bool(spec["gender"])),
        "input": "RGB float32 in [0, 1], NCHW; normalisation is inside the model",
        "method": spec["method"],
        "backbone": spec["backbone"],
        "age_min": int(spec["age_min"]),
        "age_max": int(spec["age_max"]),
        "crop": spec["crop"],
        "views": views,
        "gender": bool(spec["gender"]),
        "gender_output": "P(female)" if spec["gender"] else None,
        "embedding_size": int(model.num_features),
        # how the training crops were made: landmarks "detect" = aligned on this detector's landmarks
        "landmarks": landmarks,
        "detector": detector,
        "dataset": d.get("dataset"),
        "split": d.get("split"),
        "checkpoint": {"file": Path(checkpoint).name, "steps": payload.get("state", {}).get("step"),
                       "metrics": payload.get("metrics") or {}},
        "test_metrics": None,
        "calibration": None,
        "quantization": None,
    }


def find_test_metrics(checkpoint, metrics_file=None) -> dict | None:
    """The test metrics of `agekit eval` (metrics.json): `metrics_file`, else <ckpt dir>/eval-own-test/."""
    path = Path(metrics_file) if metrics_file else Path(checkpoint).parent / "eval-own-test" / "metrics.json"
    if not path.is_file():
        if metrics_file:
            raise AgekitError(f"metrics file not found: {path}")
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise AgekitError(f"{path}: not a readable metrics.json") from None
    metrics = doc.get("metrics", doc)
    protocol = doc.get("protocol", {})
    return {"source": path.name, "split": protocol.get("split"), "dataset": protocol.get("dataset"),
            "metrics": metrics}


def validation_data(payload: dict, root=None, progress: bool = True):
    """(views, ages) of the checkpoint's validation split, cropped with its own rule(s)."""
    from agekit.engine.data import load_splits

    cfg = copy.deepcopy(payload["config"])
    if root:
        cfg["data"]["root"] = str(root)
    cfg["data"]["limit_eval"] = None
    data = load_splits(cfg, ("val",), None, progress=progress)
    part = data["val"]
    return part.views, part.ages.astype(np.float64)


def onnx_predict(model_bytes: bytes, views, batch_size: int = 256) -> dict:
    session = make_session(model_bytes)
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list] = {n: [] for n in ("age", "std")}
    for start in range(0, len(views[0]), batch_size):
        feed = {view_input_name(i): to_nchw(v[start:start + batch_size]) for i, v in enumerate(views)}
        out = dict(zip(names, session.run(names, feed)))
        for n in parts:
            parts[n].append(out[n])
    return {n: np.concatenate(v).astype(np.float64) for n, v in parts.items()}


def export_checkpoint(checkpoint, out, *, calibrate_on: str = "val", quantize: str | None = None,
                      data_root=None, level: float = DEFAULT_LEVEL, metrics_file=None,
                      progress: bool = True) -> dict:
    """Write `out` (atomically): the ONNX model of `checkpoint` with its metadata. Returns the metadata.

    calibrate_on: "val" (split-conformal on the validation split) or "none".
    quantize: None, "int8" (static QDQ, activation ranges from validation crops) or "int8-dynamic".
    data_root: the dataset folder when it is not where the checkpoint's config says ($AGEKIT_DATA/...).
    """
    if calibrate_on not in CALIBRATE_CHOICES:
        raise AgekitError(f"--calibrate must be one of {', '.join(CALIBRATE_CHOICES)}, got {calibrate_on!r}")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise AgekitError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise AgekitError(f"--onnx file name must end in .onnx, got {out}")
    require_onnx()
    model, payload = load_model(checkpoint)
    meta = base_metadata(payload, checkpoint, model)
    meta["test_metrics"] = find_test_metrics(checkpoint, metrics_file)
    sizes = [int(v["size"]) for v in meta["views"]]
    model_bytes = onnx_bytes(model, sizes, meta["gender"])

    needs_data = calibrate_on == "val" or quantize == "int8"
    views = ages = None
    if needs_data:
        views, ages = validation_data(payload, data_root, progress=progress)
    if quantize:

        mode = "static" if quantize == "int8" else "dynamic"
        int8 = quantize_model(model_bytes, views, mode=mode)
        cost = quantization_cost(model_bytes, int8, views, ages) if views is not None else None
        meta["quantization"] = {"type": "int8", "mode": mode, "format": "QDQ" if mode == "static" else "dynamic",
                                "calibration_split": "val" if mode == "static" else None,
                                "cost_on_val": cost}
        model_bytes = int8
    if calibrate_on == "val":
        pred = onnx_predict(model_bytes, views)
        cal = calibrate(ages, pred["age"], pred["std"], level=level, age_min=meta["age_min"],
                        age_max=meta["age_max"])
        cal.update(split="val", dataset=meta["dataset"],
                   mae=float(np.abs(pred["age"] - ages).mean()))
        meta["calibration"] = cal
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(with_metadata(model_bytes, meta))
    return meta
