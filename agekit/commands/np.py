"""agekit np-demo [--models cnp,np,anp] [--iters N] [--out DIR] [--seed S]: neural processes on sine functions."""
from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path

from agekit import machine
from agekit.errors import AgekitError
from agekit.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

MODEL_NAMES = ("cnp", "np", "anp")
CONTEXT_SIZES = (2, 20, 50)
DEFAULT_ITERS = 3000
PLOT_DPI = 80


def register(sub):
    p = sub.add_parser("np-demo", help="train neural processes (CNP, NP, ANP) on random sine functions",
                       description="Train conditional, latent and attentive neural processes on random sine "
                                   "functions, then write DIR/np_demo.png (predictions for one held-out function "
                                   "with 2, 20 and 50 context points) and DIR/np_demo.json (held-out "
                                   "log-likelihood per target point by model and context size, and a fixed "
                                   "Gaussian prior baseline). See docs/neural_processes.md.")
    p.add_argument("--models", default=",".join(MODEL_NAMES),
                   help=f"comma-separated models to train (default: {','.join(MODEL_NAMES)})")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS,
                   help=f"training iterations per model, batch 16 functions (default: {DEFAULT_ITERS})")
    p.add_argument("--out", default="runs/np_demo", help="output folder (default: runs/np_demo)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and sampling (default: 0)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--hidden", type=int, default=64,
                   help="hidden and latent width (default: 64; the papers use 128, which is ~2x slower on CPU)")
    p.add_argument("--noise", type=float, default=0.0, help="observation noise std (default: 0)")
    p.add_argument("--eval-functions", type=int, default=256,
                   help="held-out functions for the log-likelihood (default: 256)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; these small models gain little from more)")
    p.set_defaults(func=run)


def parse_models(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise AgekitError("--models is empty (choose from cnp, np, anp)")
    for n in names:
        if n not in MODEL_NAMES:
            raise AgekitError(f"unknown model {n!r} in --models (choose from {', '.join(MODEL_NAMES)})")
    if len(set(names)) != len(names):
        raise AgekitError(f"--models names a model twice: {text}")
    return names


def check_args(args) -> list[str]:
    names = parse_models(args.models)
    if args.iters <= 0:
        raise AgekitError(f"--iters must be a positive number of iterations, got {args.iters}")
    if not args.lr > 0:
        raise AgekitError(f"--lr must be positive, got {args.lr}")
    if args.hidden < 8 or args.hidden % 8:
        raise AgekitError(f"--hidden must be a positive multiple of 8 (8 attention heads), got {args.hidden}")
    if not args.noise >= 0:
        raise AgekitError(f"--noise must be >= 0, got {args.noise}")
    if args.eval_functions < 2:
        raise AgekitError(f"--eval-functions must be >= 2, got {args.eval_functions}")
    if args.threads < 1:
        raise AgekitError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AgekitError(f"--out {out} exists and is not a folder")
    return names


def run(args) -> int:
    names = check_args(args)
    import torch

    from agekit.neural_process import (
        SineSampler,
        SineTask,
        build_model,
        evaluate,
        prior_log_likelihood,
        train_model,
    )

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = SineTask(noise_std=args.noise)
    # Separate streams: training data, the held-out set, the prior's moments (all from --seed).
    heldout = SineSampler(task, seed=args.seed + 1).heldout(args.eval_functions, max(CONTEXT_SIZES), 100)
    prior_mean, prior_std = SineSampler(task, seed=args.seed + 2).marginal_moments()
    prior = prior_log_likelihood(heldout, prior_mean, prior_std)
    log.info("prior baseline N(%.3f, %.3f^2): held-out LL %.3f per target point", prior_mean, prior_std,
             prior["ll"])

    results, models, timings = {}, {}, {}
    log_every = max(1, args.iters // 5)
    total_start = time.perf_counter()
    for name in names:
        torch.manual_seed(args.seed)
        model = build_model(name, d_hidden=args.hidden, d_latent=args.hidden)
        sampler = SineSampler(task, seed=args.seed)
        start = time.perf_counter()
        train_model(model, sampler, args.iters, batch_size=16, lr=args.lr, seed=args.seed, log_every=log_every)
        timings[name] = time.perf_counter() - start
        evals = {str(n): evaluate(model, heldout, n, seed=args.seed) for n in CONTEXT_SIZES}
        results[name] = {"paper": model.paper, "train_seconds": round(timings[name], 1),
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "config": model.config, "by_context": evals}
        models[name] = model
        log.info("%s: trained in %.0f s; held-out LL %s", name, timings[name],
                 ", ".join(f"{n} ctx {e['ll']:.3f}" for n, e in evals.items()))
    total = time.perf_counter() - total_start

    png = out / "np_demo.png"
    fig = demo_figure(models, results, heldout, index=0, seed=args.seed)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=PLOT_DPI)
    summary = {
        "task": task.describe(),
        "training": {"iters": args.iters, "batch_size": 16, "optimizer": "Adam", "lr": args.lr, "seed": args.seed,
                     "contexts": "Nc ~ U{0..50}, targets Nt ~ U{max(Nc,1)..100} including the context"},
        "evaluation": {"functions": args.eval_functions, "targets_per_function": 100,
                       "targets": "separate from the context", "latent_samples": 32,
                       "ll": "log p(y_T | x_T, C) / Nt (joint over targets, log-mean-exp over z for latent models)",
                       "context_sizes": list(CONTEXT_SIZES)},
        "prior_baseline": prior,
        "models": results,
        "table_ll": {name: {str(n): round(r["by_context"][str(n)]["ll"], 3) for n in CONTEXT_SIZES}
                     for name, r in results.items()},
        "seconds_total": round(total, 1),
        "machine": machine.describe(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "figure": str(png),
    }
    write_json_atomic(out / "np_demo.json", summary)
    header = "model  " + "".join(f"{f'{n} ctx':>10s}" for n in CONTEXT_SIZES) + "   train s"
    print(header)
    for name, r in results.items():
        print(f"{name:6s} " + "".join(f"{r['by_context'][str(n)]['ll']:10.3f}" for n in CONTEXT_SIZES)
              + f"{r['train_seconds']:10.1f}")
    print(f"prior  {prior['ll']:10.3f} (any context)")
    print(f"total {total:.0f} s; wrote {png} and {out / 'np_demo.json'}")
    return 0


def demo_figure(models: dict, results: dict, batch, index: int = 0, seed: int = 0):
    """Rows: models; columns: context sizes. Mean, +-2 std band, true function, context points, and for
    latent models a few decoder means for single draws of z."""
    import torch
    from matplotlib.figure import Figure

    from agekit.neural_process.sine import sine

    lo, hi = -5.0, 5.0
    x = torch.linspace(lo, hi, 200).view(1, -1, 1)
    amp, phase = batch.amplitude[index:index + 1], batch.phase[index:index + 1]
    f_true = sine(x, amp, phase)[0, :, 0]
    fig = Figure(figsize=(3.2 * len(CONTEXT_SIZES), 2.4 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), len(CONTEXT_SIZES), squeeze=False, sharex=True, sharey=True)
    ylim = float(amp) + 2.5
    for row, (name, model) in enumerate(models.items()):
        for col, n in enumerate(CONTEXT_SIZES):
            ax = axes[row][col]
            x_c, y_c = batch.x_c[index:index + 1, :n], batch.y_c[index:index + 1, :n]
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                means, stds = model.sample_predictions(x_c, y_c, x, 32, generator=generator)
            mean = means.mean(0)[0, :, 0]
            std = ((stds ** 2).mean(0) + means.var(0, unbiased=False)).sqrt()[0, :, 0]
            xs = x[0, :, 0].numpy()
            ax.fill_between(xs, (mean - 2 * std).numpy(), (mean + 2 * std).numpy(), color="tab:blue", alpha=0.25,
                            linewidth=0, label="mean ± 2 std")
            if model.has_latent:
                for k in range(3):
                    ax.plot(xs, means[k, 0, :, 0].numpy(), color="tab:blue", linewidth=0.6, alpha=0.6)
            ax.plot(xs, f_true.numpy(), color="black", linestyle="--", linewidth=1, label="true f")
            ax.plot(xs, mean.numpy(), color="tab:blue", linewidth=1.5, label="predicted mean")
            ax.scatter(x_c[0, :, 0].numpy(), y_c[0, :, 0].numpy(), s=12, color="black", zorder=3, label="context")
            ll = results[name]["by_context"][str(n)]["ll"]
            ax.set_title(f"{name.upper()}, {n} context (held-out LL {ll:.2f})", fontsize=9)
            ax.set_xlim(lo, hi)
            ax.set_ylim(-ylim, ylim)
            ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"One held-out sine function; LL = mean held-out log-likelihood per target point over "
                 f"{batch.x_t.shape[0]} functions", fontsize=9)
    return fig
