"""Running a plan: train and evaluate every unfinished run, one after another; after every run (and on
Ctrl-C or a failure) the tables are rebuilt from whatever has finished."""
from __future__ import annotations

import logging

from agekit.bench.parsing import BenchOptions
from agekit.bench.planning import Plan, make_plan
from agekit.bench.results import build_results, write_tables
from agekit.bench.resume import check_run_folder, eval_dir, is_done, read_json
from agekit.bench.table import write_results
from agekit.errors import AgekitError
from agekit.io import write_json_atomic

log = logging.getLogger(__name__)

def _train(cfg: dict, progress: bool) -> dict:
    from agekit.engine.trainer import train

    return train(cfg, progress=progress)


def _evaluate(run: dict, latency: bool, progress: bool, report: bool = True) -> dict:
    """Test-split evaluation of the run's best.pt into run_dir/eval/ (full report, or metrics.json only)."""
    from agekit.engine.evaluate import evaluate_checkpoint

    device = str(run["cfg"]["train"]["device"])
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = evaluate_checkpoint(run["run_dir"] / "best.pt", split="test", out_dir=eval_dir(run) if report else None,
                                 device=device if device.startswith("cuda") else "cpu", latency=latency,
                                 progress=progress)
    if not report:
        write_json_atomic(eval_dir(run) / "metrics.json", {"title": f"{run['name']} seed {run['seed']}",
                                                           "metrics": result["metrics"],
                                                           "protocol": result["protocol"],
                                                           "complexity": result["complexity"]})
    return result


def _row_has_latency(plan: Plan, run: dict) -> bool:
    for other in plan.runs:
        if other["name"] == run["name"] and other is not run and is_done(other):
            ev = read_json(eval_dir(other) / "metrics.json") or {}
            if ev.get("complexity"):
                return True
    return False


def execute(plan: Plan, progress: bool = True, eval_report: bool = True) -> dict:
    """Train and evaluate every unfinished run of the plan; rebuild the tables after each. Returns the results."""
    for run in plan.runs:
        check_run_folder(run)
    todo = [r for r in plan.runs if not is_done(r)]
    log.info("bench: %d runs planned, %d already finished, %d to do -> %s", len(plan.runs),
             len(plan.runs) - len(todo), len(todo), plan.out_dir)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    try:
        for i, run in enumerate(todo, 1):
            label = f"{run['name']} seed {run['seed']}" + (f" fold {run['fold']}" if run["fold"] is not None else "")
            log.info("bench [%d/%d] %s", i, len(todo), label)
            error_file = run["run_dir"] / "bench_error.txt"
            try:
                if not (run["run_dir"] / "summary.json").is_file():
                    _train(run["cfg"], progress)
                result = _evaluate(run, latency=not _row_has_latency(plan, run), progress=progress,
                                   report=eval_report)
                error_file.unlink(missing_ok=True)
                log.info("bench %s: test MAE %.3f", label, result["metrics"]["mae"])
            except (AgekitError, KeyboardInterrupt):
                raise
            except Exception as exc:  # one method failing must not lose the others' results
                log.exception("bench %s failed", label)
                run["run_dir"].mkdir(parents=True, exist_ok=True)
                message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                error_file.write_text(message + "\n")
                failures.append((label, message))
            write_tables(plan, with_plot=False)
    except KeyboardInterrupt:
        log.warning("bench interrupted: finished runs are kept and the interrupted one saved its last.pt; "
                    "run the same command to continue")
        raise
    finally:
        results = build_results(plan)

        write_results(plan.out_dir, results)
    if failures:
        raise AgekitError(f"{len(failures)} of {len(todo)} runs failed (first: {failures[0][0]}: {failures[0][1]}); "
                          f"the others are in {plan.out_dir / 'results.md'}; run the same command to retry")
    return results


def run_bench(opts: BenchOptions) -> dict:
    plan = make_plan(opts)
    return {"plan": plan, "results": execute(plan, progress=opts.progress, eval_report=opts.eval_report)}
