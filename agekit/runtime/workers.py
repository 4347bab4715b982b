"""`agekit predict --workers N`: chunks of files scored in N worker processes, one estimator each, the
results handed back in input order as they come, so the output is the same as with one process.

Why processes: decoding, face search and cropping hold the GIL for much of each file's time, so threads in
one process do not add up; a worker process loads its estimator once (about 0.6 s) and then scores whole
chunks. Workers come from a fork server on Linux (a fresh process that has imported agekit; forking this
process instead hangs once it has used OpenCV's or onnxruntime's thread pools, e.g. a second run in one
Python session) and are spawned elsewhere; the options, the --boxes table and a command's per-face fields
are pickled to them (a nested function by value: `Portable`).

Signals: Ctrl-C goes to the whole process group, so workers ignore SIGINT and the main process, which writes
the output, decides. Stopping (Ctrl-C, SIGTERM, an error) cancels the chunks not started and sends each
worker SIGTERM, on which it drops the chunk it is on (unwinding first, so a half-written annotated copy is
removed) and exits. A worker whose main process is killed with -9 exits too.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import copy
import importlib
import marshal
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from agekit.errors import AgekitError
from agekit.onnx_session import default_threads, physical_cores
from agekit.runtime import scoring

_WORKER: dict = {}  # in a worker process: its estimator and options, set once by _start


class Portable:
    """A function sent to a worker by value: pickle sends functions by name, which a nested function (a
    closure such as `agekit check`'s per-face fields) does not have. The worker runs the same interpreter,
    so marshal's code format matches; closure values must pickle (or be such functions themselves)."""

    def __init__(self, fn):
        self.module, self.code = fn.__module__, marshal.dumps(fn.__code__)
        self.defaults = fn.__defaults__
        self.cells = tuple(portable(c.cell_contents) for c in fn.__closure__ or ())

    def function(self):
        cells = tuple(types.CellType(c.function() if isinstance(c, Portable) else c) for c in self.cells)
        code = marshal.loads(self.code)
        return types.FunctionType(code, importlib.import_module(self.module).__dict__, code.co_name,
                                  self.defaults, cells)


def portable(value):
    """`value`, or a Portable of it when it is a function that pickle cannot send by name."""
    if isinstance(value, types.FunctionType):
        try:
            pickle.dumps(value)
        except (pickle.PicklingError, AttributeError, TypeError):
            return Portable(value)
    return value


class WorkerStopped(AgekitError):
    """A worker process died (killed, out of memory, a crash in native code): its chunk has no results."""


# `--workers auto` (the default) uses worker processes from this many files to score: below it, starting the
# workers and loading a model in each costs more than it saves (benchmarks/predict_workers.py on 2 cores:
# 40 photos took 1.26x as long with 2 workers, 200 photos 0.61x, 1,000 photos 0.56x).
AUTO_MIN_FILES = 200


def auto_workers(files: int) -> int:
    """Worker processes for `--workers auto`: one per physical core when there are at least AUTO_MIN_FILES
    files to score, else 1 (no worker processes). The load average is not consulted: it counts this very
    command's previous runs, and 2 workers were still 1.76x faster than one at a load of 1 on 2 cores."""
    if files < AUTO_MIN_FILES:
        return 1
    return physical_cores()


def parse_workers(text) -> int | str:
    """--workers: 'auto' or a whole number >= 1 (AgekitError otherwise, naming the option)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise AgekitError(f"--workers must be 'auto' or a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise AgekitError(f"--workers must be >= 1, got {value}")
    return value


def threads_per_worker(workers: int, threads: int | None) -> int:
    """onnxruntime (and OpenCV) threads of each worker: --threads when given, else the default thread count
    (agekit.onnx_session.default_threads: $OMP_NUM_THREADS, else the idle physical cores, at most 4)
    shared out, so that workers x threads stays within it; at least 1."""
    if threads is not None:
        return max(1, int(threads))
    return max(1, default_threads() // max(1, workers))


def _stop(signum, frame):
    """SIGTERM in a worker: a chunk being scored is unwound (its temporary files removed, _score_chunk
    then exits); an idle worker exits at once."""
    if _WORKER.get("busy"):
        raise SystemExit(128 + signum)
    os._exit(128 + signum)


def _exit_with_parent() -> None:
    """A worker exits when the main process is gone (killed with -9): nothing else would end it, as it
    holds both ends of the pool's task queue."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _start(args, per_face, boxes, threads: int) -> None:
    """Worker initializer: load the estimator once. An error is kept, returned by check_started and raised
    by each chunk."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        import cv2

        cv2.setNumThreads(threads)
        from agekit.runtime.cli import (
            build_estimator,  # late: runtime.cli imports this module
        )

        if isinstance(per_face, Portable):
            per_face = per_face.function()

        args = copy.copy(args)
        args.threads = threads
        estimator = build_estimator(args)
        notes: list[str] = []
        if hasattr(estimator, "report"):  # --context-dir: its note is printed once, by the main process
            estimator.report = notes.append
        _WORKER.update(args=args, estimator=estimator, notes=notes, boxes=boxes,
                       per_face=per_face(estimator) if per_face else None)
    except BaseException as exc:  # noqa: BLE001 (reported with the first chunk)
        _WORKER["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AgekitError) else str(exc)


def _startup_error() -> str | None:
    return _WORKER.get("error")


def _score_chunk(items, annotated):
    """One chunk in a worker: (FileResults in order, notes for stderr)."""
    if "error" in _WORKER:
        raise AgekitError(f"a worker process could not start: {_WORKER['error']}")
    _WORKER["busy"] = True
    try:
        results = scoring.process_chunk(_WORKER["args"], _WORKER["estimator"], items, _WORKER["boxes"],
                                _WORKER["per_face"], annotated)
    except SystemExit as exc:  # SIGTERM (_stop): the chunk is dropped
        os._exit(exc.code)
    finally:
        _WORKER["busy"] = False
    notes = list(_WORKER["notes"])
    _WORKER["notes"].clear()
    return results, notes


def start_pool(args, per_face, boxes, workers: int) -> WorkerPool:
    """A started pool for `agekit predict/check --workers`: a worker has loaded its estimator (they all
    load the same), or the error that stopped it is raised and the pool closed."""
    pool = WorkerPool(args, per_face, boxes, workers, threads_per_worker(workers, args.threads))
    try:
        pool.check_started()
    except BaseException:
        pool.close()
        raise
    return pool


class WorkerPool:
    """N worker processes scoring chunks; `results(chunks)` yields each chunk's results in input order,
    keeping at most two chunks per worker queued (memory stays flat on any batch)."""

    def __init__(self, args, per_face, boxes, workers: int, threads: int):
        per_face = portable(per_face)
        try:
            pickle.dumps((args, per_face, boxes))
        except Exception as exc:  # noqa: BLE001 (a programming error of a command, said in one line)
            raise AgekitError(f"--workers: the options cannot be sent to worker processes ({exc}); "
                              "use --workers 1") from None
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["agekit.runtime.cli"])  # each worker starts with agekit imported
        else:
            context = multiprocessing.get_context("spawn")
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                        initargs=(args, per_face, boxes, threads))

    def check_started(self) -> None:
        """Wait for a worker to load its estimator; its error (a missing model, a detector that cannot run)
        is raised here, as the usage error that one process raises before reading any file."""
        try:
            error = self.pool.submit(_startup_error).result()
        except BrokenProcessPool:
            error = ("the worker processes could not start (a script that runs agekit with --workers needs "
                     "the `if __name__ == \"__main__\":` guard of every multiprocessing program)")
        if error is not None:
            raise AgekitError(error)

    def results(self, chunks):
        """chunks: iterable of (items, annotated destinations) -> yields each chunk's results, in order.
        Notes for stderr (the --context-dir note) are printed once, although every worker makes them."""
        chunks = iter(chunks)
        queued = collections.deque()
        printed = set()

        def submit_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                try:
                    future = self.pool.submit(_score_chunk, *chunk)
                except BrokenProcessPool as exc:  # a worker died meanwhile: raised in turn, after the chunks before
                    future = concurrent.futures.Future()
                    future.set_exception(exc)
                queued.append(future)

        for _ in range(2 * self.workers):
            submit_next()
        while queued:
            try:
                results, notes = queued.popleft().result()
            except BrokenProcessPool:
                raise WorkerStopped("a worker process stopped unexpectedly (killed, out of memory or a crash); "
                                    "the files of its chunk have no results") from None
            submit_next()
            for line in notes:
                if line not in printed:
                    printed.add(line)
                    print(line, file=sys.stderr)
            yield results

    def close(self, stop: bool = True) -> None:
        """No more chunks: cancel what has not started and (stop) make the workers drop the chunks they are
        on; the workers exit."""
        # ProcessPoolExecutor has no public way to reach its processes before Python 3.14; shutdown forgets them
        processes = list((getattr(self.pool, "_processes", None) or {}).values()) if stop else []
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
