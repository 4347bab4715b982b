"""The inference pool: the estimator runs in a fixed number of threads, off the event loop, behind a bounded
queue. A request that finds `concurrency + queue` requests already admitted is answered 503 `busy` with
Retry-After at once, so an overload is shed instead of piling up into timeouts.

onnxruntime sessions may be run from several threads at once, so the threads share one AgeEstimator (and
its per-level copies, `AgeEstimator.with_level`). A request that times out keeps its thread until the image
is done (the slot stays taken: the queue bound holds), and a request whose deadline passed while it waited
is dropped without being scored.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import agekit.io
from agekit.errors import AgekitError, ImageError
from agekit.runtime.scoring import FileResult, record, to_photo_pixels
from agekit.runtime.estimator import AgeEstimator
from agekit.serve.errors import ApiError, image_error

log = logging.getLogger("agekit.serve")


def load_estimator(settings):
    """The AgeEstimator for these settings, with its detector made and both networks run once (so that the
    first request is not the slow one)."""


    est = AgeEstimator(model=settings.model, level=settings.level, threads=settings.threads)
    est.predict(np.zeros((96, 96, 3), np.uint8))  # the detector (finds nothing)
    size = est.model.views[0].size
    est.predict_crops(np.zeros((1, size, size, 3), np.uint8)) if len(est.model.views) == 1 else None
    return est


class InferencePool:
    def __init__(self, settings, metrics=None):
        self.settings = settings
        self.metrics = metrics
        self.capacity = settings.concurrency + settings.queue
        self.admitted = 0  # scoring or waiting; changed on the event loop's thread only
        self.uploading = 0  # bodies being read (not yet admitted); also on the event loop's thread only
        self.estimator = None
        self.error: str | None = None  # why the model could not be loaded
        self._executor = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="agekit-infer")
        self._levels: dict = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.estimator is not None

    async def start(self, estimator=None) -> None:
        """Use a loaded estimator, or load one (in a thread; the process serves nothing until it is done, so a
        worker of `--workers N` takes connections only once it can score). A model that fails to load is
        logged and the process stays up answering 503 not_ready (/readyz says why)."""
        if estimator is not None:
            self.estimator = estimator
            return

        def load():
            try:
                self.estimator = load_estimator(self.settings)
                log.info("model loaded", extra={"fields": {"event": "model_loaded",
                                                           "model": str(self.estimator.model.path)}})
            except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log; the process stays up
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("model failed to load", extra={"fields": {"event": "model_failed", "error": self.error}})

        await asyncio.get_running_loop().run_in_executor(None, load)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def estimator_at(self, level: float | None):
        """The estimator at this interval level (copies are kept; at most 32 levels)."""
        est = self.estimator
        if level is None or level == est.level:
            return est
        with self._lock:
            found = self._levels.get(level)
            if found is None:
                if len(self._levels) >= 32:
                    self._levels.clear()
                found = self._levels[level] = est.with_level(level)
        return found

    def check_ready(self) -> None:
        if not self.ready:
            raise ApiError("not_ready", self.error and f"the model failed to load ({self.error})"
                           or "the model is still loading; try again shortly", {"Retry-After": "2"})

    def check_room(self) -> None:
        if self.admitted >= self.capacity:
            raise ApiError("busy", f"all {self.settings.concurrency} scoring threads are busy and "
                                   f"{self.settings.queue} requests are waiting; try again",
                           {"Retry-After": str(self.settings.retry_after)})

    @contextlib.contextmanager
    def upload_slot(self):
        """Held while a request's body is read. At most `concurrency + queue` bodies are read at once, so the
        memory held by uploads is bounded as the queue is ((2 x capacity) x --max-upload-mb at most, with the
        admitted ones); one more is answered 503 busy before its body is read."""
        if self.uploading >= self.capacity:
            raise ApiError("busy", f"{self.uploading} uploads are being received; try again",
                           {"Retry-After": str(self.settings.retry_after)})
        self.uploading += 1
        try:
            yield
        finally:
            self.uploading -= 1

    async def run(self, work, deadline: float):
        """work(seconds waited) in a pool thread, if there is room; ApiError busy / timeout otherwise."""
        self.check_ready()
        self.check_room()
        self.admitted += 1
        self._gauge()
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter()

        def guarded():
            if time.monotonic() > deadline:  # its client has had its 504 already
                return None
            return work(time.perf_counter() - submitted)

        future = loop.run_in_executor(self._executor, guarded)
        future.add_done_callback(lambda _: self._release())
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            result = None
        if result is None:  # timed out here, or dropped by guarded() just before this side's timer fired
            raise ApiError("timeout", f"the image was not scored within the {self.settings.timeout:g} s "
                                      "request timeout")
        return result

    def _release(self) -> None:
        self.admitted -= 1
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue.set(self.admitted)


def score(pool: InferencePool, est, upload, min_age, probs: bool, waited: float) -> dict:
    """Decode, detect and score one upload (in a pool thread): the answer's document."""

    t0 = time.perf_counter()
    settings = pool.settings
    try:
        loaded = agekit.io.read_image(upload.image, name="image", max_pixels=settings.max_pixels,
                                      work_pixels=agekit.io.WORK_PIXELS)
        context = [(agekit.io.read_image(data, name=f"context[{i}]", max_pixels=settings.max_pixels,
                                         work_pixels=agekit.io.WORK_PIXELS).array, age)
                   for i, (data, age) in enumerate(upload.context)]
    except ImageError as exc:
        raise image_error(exc) from None
    t1 = time.perf_counter()
    if context:
        try:
            _ = est.personalizer
        except AgekitError as exc:
            raise ApiError("no_personalisation", str(exc).splitlines()[0]) from None
    try:
        faces = est.predict(loaded.array, context=context or None)
    except AgekitError as exc:
        raise ApiError("bad_context" if context else "bad_image", str(exc).splitlines()[0]) from None
    t2 = time.perf_counter()
    to_photo_pixels(faces, loaded)  # boxes and landmarks in the photo's own pixels, as `agekit predict`
    extra = []
    for f in faces:
        fields = {}
        if min_age is not None:
            decision, prob = est.check_age(f, min_age)
            fields.update(decision=decision, p_over=round(prob, 4), min_age=min_age)
        if probs and f.probs is not None:
            fields["probs"] = [round(float(p), 6) for p in f.probs]
        extra.append(fields)
    doc = record(FileResult("image", faces, extra))
    if pool.metrics is not None:
        pool.metrics.inference.observe(t2 - t0)
        pool.metrics.faces.inc(len(faces))
    width, height = loaded.size
    out = {"faces": doc["faces"], "image": {"width": width, "height": height}, "level": est.level}
    if min_age is not None:
        out["min_age"] = min_age
    if probs:
        out["ages"] = [est.model.age_min, est.model.age_max]
    out["timing"] = {"queue_ms": round(waited * 1000, 1), "decode_ms": round((t1 - t0) * 1000, 1),
                     "inference_ms": round((t2 - t1) * 1000, 1)}
    return out
