"""Evaluation: metrics (numpy only), model complexity (torch) and Markdown/PNG reports (matplotlib).

Only metrics is imported here so that `import agekit.eval` needs neither torch nor matplotlib.
"""
from agekit.eval.metrics import compute_metrics

__all__ = ["compute_metrics"]
