"""Benchmarks: every method under one protocol (`agekit bench`), resumable, with a citable table.

A benchmark is a plan of runs; a row fixes the method and its parameters, everything else (the protocol) is
the same for every run. The parts, each doing one thing:
parsing (BenchOptions and the flags' parsers) -> planning (Plan: rows, runs and their configs) ->
execution (train and evaluate what is unfinished) with resume (run state on disk: done, resumable, or made
under another protocol) -> results (records, summary rows, protocol notes) -> table (results.md/json/png).
"""
from agekit.bench.execution import execute, run_bench
from agekit.bench.parsing import BenchOptions
from agekit.bench.planning import Plan, make_plan
from agekit.bench.table import fmt_mae, mean_std

__all__ = ["BenchOptions", "Plan", "execute", "fmt_mae", "make_plan", "mean_std", "run_bench"]
