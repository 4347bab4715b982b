"""Benchmarks: every method under one protocol (`agekit bench`), resumable, with a citable table."""
from agekit.bench.runner import BenchOptions, Plan, execute, make_plan, run_bench
from agekit.bench.table import fmt_mae, mean_std

__all__ = ["BenchOptions", "Plan", "execute", "fmt_mae", "make_plan", "mean_std", "run_bench"]
