"""onnxruntime sessions as agekit runs them: the age models and the face detectors share one session setup
and one rule for the number of CPU threads (numpy and onnxruntime only)."""
from __future__ import annotations

import os
from pathlib import Path

from agekit.errors import AgekitError


# Most intra-op threads a session gets by default. Chosen with benchmarks/predict_speed.py: the networks are
# small (a few ms per call), so threads beyond a few only add wake-up cost.
MAX_DEFAULT_THREADS = 4


def physical_cores() -> int:
    """CPU cores this process may use, counting hyper-threads of one core once and honouring the affinity
    mask and a cgroup CPU quota (containers); at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    count = len(cpus)
    try:  # Linux: one core per (package, core id)
        cores = set()
        for cpu in cpus:
            topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        count = len(cores) or count
    except OSError:
        pass
    try:  # cgroup v2 quota, e.g. "200000 100000" = 2 CPUs
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def idle_cpus() -> int:
    """Logical CPUs of this process's affinity mask not busy with other work, from the 1-minute load average
    (all of them where it is unknown)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return int(count - load + 0.5)


def default_threads() -> int:
    """onnxruntime intra-op threads when not given: $OMP_NUM_THREADS when set; else the physical cores this
    process may use, at most MAX_DEFAULT_THREADS and at most the CPUs the load average leaves idle, and at
    least 1. Measured with benchmarks/predict_speed.py on a 2-core machine shared with a training job (load
    about 3): onnxruntime's own default (every logical CPU, spinning threads) made a prediction 2.6x slower
    than one thread, and two sleeping threads were still 7-9% slower than one; on idle cores threads help."""
    try:
        value = int(os.environ["OMP_NUM_THREADS"])
        if value > 0:
            return value
    except (KeyError, ValueError):
        pass
    return max(1, min(physical_cores(), MAX_DEFAULT_THREADS, idle_cpus()))


def make_session(model, threads: int | None = None):
    """An onnxruntime CPU session for a model path or serialised bytes: `threads` intra-op threads (None:
    default_threads()), sequential execution, and threads that sleep rather than spin while they wait (a
    spinning pool holds every core it has between the small calls of a prediction, which on a busy machine
    made two threads slower than one)."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise AgekitError("running agekit models needs onnxruntime: python -m pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # CenterFace's BatchNorm counters trigger harmless warnings
    options.intra_op_num_threads = default_threads() if threads is None else max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
