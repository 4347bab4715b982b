"""agekit explain PHOTO... --out DIR : which regions of each face move its age estimate, and its predicted
age distribution; agekit saliency MODEL... : the same averaged per age band over a dataset split, with
the deletion check (agekit.explain.bands).

Two commands rather than one with a --dataset switch: they take different inputs (a user's photos vs a
dataset split and one or more models), write different things (per-face pictures vs aggregates and a
table), and saliency reads research datasets, which a user explaining a photo never needs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from agekit.errors import AgekitError, ImageError
from agekit.explain.bands import run_bands as run_all
from agekit.explain.bands import write_bands
from agekit.explain.geometry import region_masks, region_shares
from agekit.explain.occlusion import check_options
from agekit.explain.render import png_bytes
from agekit.io import atomic_path, load_image, write_json_atomic
from agekit.runtime import AgeEstimator
from agekit.runtime.inputs import walk_folder

FILL_CHOICES = ("mean", "blur")  # agekit.explain.occlusion.FILLS (not imported: --help stays light)


def register(sub):
    p = sub.add_parser("explain", help="heat maps of the face regions that move each age estimate, and its distribution",
                       description="For every face in the photos: an occlusion-sensitivity heat map over the aligned "
                                   "face the model saw and over the photo, the signed effect (regions that make the "
                                   "face look older or younger), the predicted age distribution as a chart, and with "
                                   "--checkpoint Grad-CAM and layer feature maps. ONNX runtime only unless "
                                   "--checkpoint is given. See docs/explain.md.")
    p.add_argument("photos", nargs="+", help="image files or folders (walked recursively)")
    p.add_argument("--out", required=True, help="folder for the pictures and explain.json (created)")
    p.add_argument("--model", default=None, help="default, fast or an ONNX file from agekit export")
    p.add_argument("--checkpoint", help="the model's training checkpoint (.pt): adds Grad-CAM (needs torch)")
    p.add_argument("--layers", help="with --checkpoint: feature maps of these layers, comma-separated, or 'auto' "
                                    "(the ends of the last three stages at least 7 cells wide)")
    p.add_argument("--grid", type=int, default=8,
                   help="occlusion cells per side, 2-32; (grid-1)^2 occluded copies per face (default 8: 49)")
    p.add_argument("--fill", choices=FILL_CHOICES, default="mean",
                   help="what hides a patch: the face's mean colour (default) or a blurred copy")
    p.add_argument("--max-faces", type=int, help="explain at most N faces per photo (best detector score first)")
    p.add_argument("--threads", type=int, help="onnxruntime threads")
    p.set_defaults(func=run)

    b = sub.add_parser("saliency", help="mean saliency per age band over a dataset split, and the deletion check",
                       description="For one or more models: occlusion maps of a seeded sample of faces per age band "
                                   "(infants 0-2, children 3-12, teenagers 13-19, adults 20-59, seniors 60+) of a "
                                   "dataset split, averaged per band into one figure (models side by side), the "
                                   "share of saliency per face region, and the deletion check: hiding the most "
                                   "salient 10%% of the face must move the estimate more than hiding a random 10%%. "
                                   "Writes only aggregates (no dataset face). See docs/explain.md.")
    b.add_argument("models", nargs="+", help="ONNX models (default, fast or files); two or more are compared")
    b.add_argument("--dataset", default="utkface")
    b.add_argument("--data", help="dataset folder (default $AGEKIT_DATA/<dataset folder>)")
    b.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    b.add_argument("--per-band", type=int, default=50, help="faces per age band (seeded sample; default 50)")
    b.add_argument("--fraction", type=float, default=0.1, help="share of the face deleted in the check (0.1)")
    b.add_argument("--grid", type=int, default=8)
    b.add_argument("--fill", choices=FILL_CHOICES, default="mean")
    b.add_argument("--checkpoint", help="a training checkpoint of the first model: adds the channels of --layer "
                                        "that respond most to each band (needs torch)")
    b.add_argument("--layer", help="layer for --checkpoint (default: the Grad-CAM layer)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int)
    b.add_argument("--out", required=True, help="folder for the figures, bands.json and bands.md")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=run_bands)


def _photo_paths(args_photos) -> tuple[list[Path], list[str]]:
    """(image files, error lines): folders walked as `agekit predict` walks them; a missing path is an error
    line naming it."""

    paths, errors = [], []
    for given in args_photos:
        path = Path(given)
        if path.is_dir():
            found, _skipped, bad = walk_folder(path)
            paths += found
            errors += [f"{b.path}: {b.error}" for b in bad]
        elif path.is_file():
            paths.append(path)
        else:
            errors.append(f"{given}: no such file or folder")
    return paths, errors


def _out_dir(out: str) -> Path:
    """The --out folder, made now (before any work) so that a folder that cannot be made is a usage error."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise AgekitError(f"--out {out}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AgekitError(f"--out {out}: cannot make the folder ({exc.strerror or exc})") from None
    return path


def _write_png(path: Path, rgb) -> None:

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png_bytes(rgb))


def _unique_stem(path: Path, used: set, keep: set) -> str:
    """The name stem of a photo's files: unique in this run, and never one whose files (STEM.png,
    STEM-faceK...) would overwrite a file of `keep` (names in --out: the input photos there, the files this
    run wrote)."""
    def taken(stem):
        return stem in used or any(n == f"{stem}.png" or n.startswith(f"{stem}-face") for n in keep)

    stem, n = path.stem, 2
    while taken(stem):
        stem, n = f"{path.stem}-{n}", n + 1
    used.add(stem)
    return stem


def _checkpoint_model(args, est):
    """(torch model, layers to show) for --checkpoint, checked against the ONNX model's crop."""
    if not args.checkpoint:
        if args.layers:
            raise AgekitError("--layers needs --checkpoint (feature maps come from the torch network)")
        return None, []
    try:
        from agekit.explain.gradcam import check_layers, load_checkpoint, stage_ends
    except ModuleNotFoundError as exc:
        raise AgekitError(f"--checkpoint needs torch ({exc.name} is missing): pip install -e '.[train]'") from None
    model, specs = load_checkpoint(args.checkpoint)
    if specs[0] != est.model.views[0]:
        raise AgekitError(f"{args.checkpoint}: its crop {specs[0]} differs from the model's {est.model.views[0]}; "
                          f"pass --model with the ONNX file exported from this checkpoint")
    layers = []
    if args.layers == "auto":
        layers = stage_ends(model, specs[0].size)[-3:]
    elif args.layers:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    check_layers(model, layers, specs[0].size)  # before any file is written
    return model, layers


def run(args) -> int:

    from agekit.explain.render import (
        distribution_chart,
        face_panel,
        layer_grid,
        photo_overlay,
    )

    check_options(args.grid, args.fill)
    if args.max_faces is not None and args.max_faces < 1:
        raise AgekitError(f"--max-faces must be at least 1, got {args.max_faces}")
    out = _out_dir(args.out)
    est = AgeEstimator(args.model, max_faces=args.max_faces, threads=args.threads)
    cam_model, layers = _checkpoint_model(args, est)
    paths, errors = _photo_paths(args.photos)
    for line in errors:
        print(f"agekit explain: {line}", file=sys.stderr)
    out_real = os.path.realpath(out)
    keep = {p.name for p in paths if os.path.dirname(os.path.realpath(p)) == out_real}  # never overwritten
    masks = region_masks(est.model.views[0])
    records, used, failed = [], set(), len(errors)
    for path in paths:
        try:
            image = load_image(path)
            explanations = est.explain(image, grid=args.grid, fill=args.fill)
        except (ImageError, AgekitError) as exc:
            print(f"agekit explain: {path}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
            failed += 1
            continue
        if not explanations:
            print(f"agekit explain: {path}: no face found", file=sys.stderr)
            failed += 1
            continue
        if cam_model is not None:
            from agekit.explain.gradcam import feature_maps, grad_cam

            cams = grad_cam(cam_model, np.stack([e.crop for e in explanations]))
            for e, cam in zip(explanations, cams):
                e.gradcam = cam
        stem = _unique_stem(path, used, keep)
        keep.add(f"{stem}.png")
        photo_file = out / f"{stem}.png"
        _write_png(photo_file, photo_overlay(image, explanations))
        for k, e in enumerate(explanations, 1):
            f = e.face
            files = {"photo": photo_file.name, "panel": f"{stem}-face{k}.png",
                     "distribution": f"{stem}-face{k}-distribution.png", "maps": f"{stem}-face{k}-maps.npz"}
            chart = distribution_chart(f.probs, e.ages, f.age, f.interval)
            _write_png(out / files["distribution"], chart)
            _write_png(out / files["panel"], face_panel(e, chart))
            arrays = {"crop": e.crop, "saliency": e.saliency, "age_effect": e.age_effect, "matrix": e.matrix}
            if e.gradcam is not None:
                arrays["gradcam"] = e.gradcam
            if layers:
                files["layers"] = f"{stem}-face{k}-layers.png"
                fmaps = feature_maps(cam_model, e.crop[None], layers)
                _write_png(out / files["layers"], layer_grid({n: v[0] for n, v in fmaps.items()}))
            _save_npz(out / files["maps"], arrays)
            keep.update(name for key, name in files.items() if key != "photo")
            shares = region_shares(e.saliency, masks)
            top = sorted(shares, key=shares.get, reverse=True)[:2] if shares else []
            records.append({"file": str(path), "face": k, **f.to_dict(),
                            "occlusion": {"grid": e.grid, "fill": e.fill, "max_years": float(e.saliency.max()),
                                          "mean_years": float(e.saliency.mean()),
                                          "region_shares": None if shares is None else
                                          {n: round(v, 3) for n, v in shares.items()}},
                            "files": files})
            where = f"; most salient: {', '.join(top)}" if top else ""
            print(f"{path} face {k}: age {f.age:.1f} ({f.level:.0%} interval {f.interval[0]:.0f}-{f.interval[1]:.0f})"
                  f"{where} -> {out / files['panel']}")
    write_json_atomic(out / "explain.json", {"model": str(est.model.path), "faces": records})
    if failed or len(paths) > 1:
        ok = len(paths) + len(errors) - failed
        print(f"{len(paths) + len(errors)} files, {ok} ok, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _save_npz(path: Path, arrays: dict) -> None:


    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def run_bands(args) -> int:

    out = _out_dir(args.out)  # before the run: a bad --out must not cost the run
    result = run_all(args.models, dataset=args.dataset, root=args.data, split=args.split, per_band=args.per_band,
                     fraction=args.fraction, grid=args.grid, fill=args.fill, seed=args.seed, threads=args.threads,
                     checkpoint=args.checkpoint, layer=args.layer, progress=not args.no_progress)
    files = write_bands(out, result)
    for name, m in result["models"].items():
        d = m["deletion"]
        print(f"{name}: {m['n_faces']} faces; deleting the most salient {args.fraction:.0%} moves the age by "
              f"{d['salient_mean']:.2f} years, a random {args.fraction:.0%} by {d['random_mean']:.2f} "
              f"(salient > random for {d['salient_wins']:.0%} of faces)")
    print(f"report: {files['report']}")
    return 0
