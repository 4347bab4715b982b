"""The machine a figure was measured on, recorded beside every benchmark and report (one description)."""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path


def cpu_name() -> str:
    """Human-readable CPU model; /proc/cpuinfo first because platform.processor() is just 'x86_64' on Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The vector-instruction flags that decide CPU inference speed (avx*, amx*, fma, sse4*)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                return sorted({f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "sse4"))})
    return []


def describe() -> dict:
    """CPU, cores, vector flags, OS, Python and the load average when measured (a shared machine's load
    explains a slow figure), and torch's version and threads when torch is loaded."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_flags": " ".join(cpu_flags()),
            "platform": platform.platform(), "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    torch = sys.modules.get("torch")  # described only when the measurement used it (never imported here)
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info
