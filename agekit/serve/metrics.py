"""Prometheus metrics of the service (GET /metrics): requests, latency, faces, errors, queue depth.

With several worker processes (`--workers N`), `agekit serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh
temporary folder before the workers start, and /metrics then sums the workers' values (prometheus_client's
multiprocess mode); with one process the values live in memory.
"""
from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# request latency buckets (seconds): a face photo takes ~0.1-0.5 s on a 2-core CPU; queueing adds multiples
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
ENDPOINTS = {"/v1/estimate", "/v1/check", "/v1/model", "/healthz", "/readyz", "/metrics", "/"}


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("agekit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("agekit_request_seconds", "time from a request's start to its answer",
                                 ["endpoint"], buckets=BUCKETS, registry=r)
        self.inference = Histogram("agekit_inference_seconds", "time scoring one image (decode, detect, model)",
                                   buckets=BUCKETS, registry=r)
        self.faces = Counter("agekit_faces", "faces found in answered images", registry=r)
        self.errors = Counter("agekit_errors", "error answers by code (and client_disconnected)", ["code"],
                              registry=r)
        self.queue = Gauge("agekit_queue_depth", "requests scoring or waiting for a thread", registry=r,
                           multiprocess_mode="livesum")

    @staticmethod
    def endpoint(path: str) -> str:
        """The path as a label, from a fixed set (unknown paths are 'other': labels stay bounded)."""
        return path if path in ENDPOINTS else ("/static" if path.startswith("/static/") else "other")

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
