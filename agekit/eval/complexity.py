"""Model size and speed: parameters, GMACs and batch-1 CPU latency (torch)."""
from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from agekit.machine import cpu_name


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared tensors counted once); only requires_grad ones if trainable_only."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def example_input(input_size, device="cpu"):
    """A zero batch-1 input: (1, 3, S, S) for an int S; a list of them for a multi-input model's sizes."""
    if isinstance(input_size, (list, tuple)):
        return [example_input(s, device) for s in input_size]
    return torch.zeros(1, 3, input_size, input_size, device=device)


def gmacs(model: nn.Module, input_size: int) -> float:
    """Multiply-accumulates (x 1e9) of one eval-mode forward pass on a (1, 3, S, S) input, S = input_size.

    Counted with torch's FlopCounterMode, which counts 2 FLOPs per MAC (so MACs = FLOPs / 2) and only
    matmul/conv-like ops: bias adds, activations and normalisation are not counted, as in most papers.
    """
    x = example_input(input_size, _device(model))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def cpu_latency_ms(model: nn.Module, input_size: int, threads: int = 1, warmup: int = 5,
                   runs: int = 30) -> tuple[float, float]:
    """Median and 90th-percentile wall time (ms) of a batch-1 (1, 3, S, S) forward pass on CPU.

    Runs in eval mode under torch.inference_mode with `threads` intra-op threads; the previous thread
    count and the model's train/eval modes are restored afterwards. A model on another device is
    timed on a CPU copy, so the caller's model is never moved.
    """
    if _device(model).type != "cpu":
        model = copy.deepcopy(model).cpu()
    x = example_input(input_size)
    times = []
    with _num_threads(threads), _eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)), float(np.percentile(times, 90))


def model_complexity(model: nn.Module, input_size: int, threads: int = 1, warmup: int = 5,
                     runs: int = 30) -> dict:
    """Size and speed summary of `model` for a (1, 3, S, S) input, as a JSON-serialisable dict."""
    median, p90 = cpu_latency_ms(model, input_size, threads=threads, warmup=warmup, runs=runs)
    return {
        "params": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "gmacs": gmacs(model, input_size),
        "input_size": input_size if isinstance(input_size, (list, tuple)) else int(input_size),
        "latency_ms_median": median,
        "latency_ms_p90": p90,
        "threads": int(threads),
        "torch": torch.__version__,
        "cpu": cpu_name(),
    }


def _device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer; CPU for a model without tensors."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Put every submodule in eval mode, then restore each one's own flag (they may differ, e.g. frozen BN)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _num_threads(threads: int):
    """Temporarily set torch's intra-op thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
