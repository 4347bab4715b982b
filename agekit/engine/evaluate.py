"""Evaluate a checkpoint on a dataset split: metrics, report with plots, model complexity."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from agekit.crop import CropSpec, view_specs
from agekit.data.cache import load_crop
from agekit.engine.checkpoint import load_model
from agekit.engine.data import data_root, load_splits
from agekit.engine.inference import predict_images
from agekit.engine.precision import resolve_precision
from agekit.eval.metrics import compute_metrics
from agekit.eval.report import write_report


def evaluate_checkpoint(checkpoint, *, split="test", dataset=None, root=None, split_spec=None, out_dir=None,
                        device="cpu", batch_size=256, latency=True, progress=True, options=None) -> dict:
    """Score `checkpoint` on `split` of the dataset it was trained on (or another: dataset/root).

    The checkpoint's own crop rule and input size are used, so the evaluation sees what training saw.
    Returns {'metrics', 'protocol', 'complexity', 'files'}.
    """
    import torch

    model, payload = load_model(checkpoint, device)
    cfg = copy.deepcopy(payload["config"])
    d = cfg["data"]
    if dataset and dataset != d["dataset"]:
        d.update(dataset=dataset, options={}, split={"kind": "random", "seed": 0, "val_fraction": 0.1,
                                                     "test_fraction": 0.2})
    if root:
        d["root"] = str(root)
    if options:
        d["options"] = {**d["options"], **options}
    if split_spec:
        d["split"] = {**d["split"], **split_spec}
    d["limit_eval"] = None
    data = load_splits(cfg, (split,), None, progress=progress)
    part, header = data[split], data["_split_header"]
    precision = resolve_precision("fp32" if device == "cpu" else "auto", torch.device(device))
    t0 = time.perf_counter()
    pred = predict_images(model, part.views, batch_size=batch_size, device=device, precision=precision)
    seconds = time.perf_counter() - t0

    records = part.records
    race = np.array([-1 if r.race is None else r.race for r in records])
    age_std = np.array([np.nan if r.age_std is None else r.age_std for r in records])

    metrics = compute_metrics(
        part.ages, pred["age"], gender=part.genders, gender_pred=pred.get("gender_prob"), race=race,
        age_std=age_std if np.isfinite(age_std).any() else None,
        pred_std=pred["std"] if float(np.max(pred["std"], initial=0)) > 0 else None,
    )
    protocol = {
        "checkpoint": str(checkpoint),
        "dataset": d["dataset"],
        "data_root": str(data_root(cfg)),
        "split": split,
        "split_rule": header,
        "method": cfg["method"]["name"],
        "method_params": cfg["method"]["params"],
        "backbone": cfg["model"]["backbone"],
        "crop": d["crop"],
        "age_range": [d["age_min"], d["age_max"]],
        "n_images": len(records),
        "trained_steps": payload["state"].get("step"),
        "eval_seconds": round(seconds, 2),
        "device": str(device),
    }
    complexity = None
    if latency:
        from agekit.eval.complexity import model_complexity

        sizes = [spec.size for spec in view_specs(cfg)]
        complexity = model_complexity(model.cpu(), sizes[0] if len(sizes) == 1 else sizes)
    rows = []
    for i, r in enumerate(records):
        row = {"key": r.key, "path": r.path, "true_age": float(part.ages[i]), "pred_age": float(pred["age"][i]),
               "pred_std": float(pred["std"][i])}
        if r.gender is not None:
            row["gender"] = int(r.gender)
        if "gender_prob" in pred:
            row["gender_prob"] = float(pred["gender_prob"][i])
            row["gender_pred"] = int(pred["gender_prob"][i] >= 0.5)
        if r.race is not None:
            row["race"] = int(r.race)
        rows.append(row)
    files = {}
    if out_dir is not None:

        spec = CropSpec(**d["crop"])
        by_path = {r.path: r for r in records}
        title = f"{cfg['method']['name']} / {cfg['model']['backbone']} on {d['dataset']} ({split})"
        files = write_report(Path(out_dir), metrics, rows, title=title, protocol=protocol, complexity=complexity,
                             image_loader=lambda path: load_crop(by_path[path], spec))
    return {"metrics": metrics, "protocol": protocol, "complexity": complexity, "files": files}
