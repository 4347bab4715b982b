"""agekit serve: the HTTP service (POST /v1/estimate, /v1/check; GET /v1/model, /healthz, /readyz, /metrics,
/docs) and its web page at /, with FastAPI and uvicorn. See docs/serve.md."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from agekit.errors import AgekitError
from agekit.onnx_session import physical_cores
from agekit.runtime.onnx_model import OnnxAgeModel
from agekit.serve.inference import load_estimator
from agekit.serve.settings import ENV_VAR, ServeSettings, read_api_keys


def register(sub):
    p = sub.add_parser("serve", help="run the HTTP service and its web page (FastAPI + uvicorn)",
                       description="Serve age estimation over HTTP: POST /v1/estimate and /v1/check (multipart "
                                   "field 'file', JSON {\"image\": base64} or a raw image body), GET /v1/model, "
                                   "/healthz, /readyz, /metrics, OpenAPI docs at /docs and a web page at /. Images "
                                   "are held in memory only, never written to disk or logged. See docs/serve.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", help="'default', 'fast' or an ONNX file made by `agekit export`")
    p.add_argument("--workers", type=int, default=1,
                   help="uvicorn worker processes, each with its own model and scoring threads (default 1)")
    p.add_argument("--concurrency", type=int, default=2, help="images scored at once in each process (default 2)")
    p.add_argument("--queue", type=int, default=16,
                   help="requests that may wait for a scoring thread in each process; more are answered 503 with "
                        "Retry-After (default 16)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds for one request: receiving the upload, waiting and scoring (default 30)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels, read from its header before decoding (default 40,000,000)")
    p.add_argument("--max-context", type=int, default=16, help="most context photos per request (default 16)")
    p.add_argument("--level", type=float, default=0.9, help="default interval level; a request may ask another (?level=)")
    p.add_argument("--threads", type=int,
                   help="onnxruntime threads per session (default: the physical cores shared out among workers x "
                        "concurrency, at least 1)")
    p.add_argument("--api-key-file", metavar="FILE",
                   help="require an X-API-Key header on /v1/* and /metrics: FILE holds the accepted keys, one a line")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (e.g. https://shop.example) to call the API; repeatable "
                        "(default: CORS off)")
    p.add_argument("--max-connections", type=int, default=512,
                   help="open connections uvicorn accepts before answering 503 (default 512)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def settings_from_args(args):

    if args.workers < 1:
        raise AgekitError(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        raise AgekitError(f"--port must be 0-65535, got {args.port}")
    if args.max_connections < 1:  # uvicorn would answer every request 503
        raise AgekitError(f"--max-connections must be >= 1, got {args.max_connections}")
    threads = args.threads
    if threads is None:  # one thread per core in all: more only fight over the cores (docs/serve.md)
        threads = max(1, physical_cores() // (args.workers * max(1, args.concurrency)))
    return ServeSettings(
        model=args.model, level=args.level, concurrency=args.concurrency, queue=args.queue, timeout=args.timeout,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_context=args.max_context,
        threads=threads, api_keys=read_api_keys(args.api_key_file) if args.api_key_file else [],
        api_key_file=str(Path(args.api_key_file).expanduser().resolve()) if args.api_key_file else None,
        cors_origins=list(args.cors_origin), log_level=args.log_level).check()


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as exc:
        raise AgekitError(f"agekit serve needs the '{exc.name}' package: python -m pip install \"agekit[serve]\"") \
            from None
    from agekit.serve.app import create_app, log_config

    settings = settings_from_args(args)
    options = {"host": args.host, "port": args.port, "log_config": log_config(args.log_level), "access_log": False,
               "limit_concurrency": args.max_connections, "timeout_graceful_shutdown": settings.timeout + 5,
               "server_header": False}
    if args.workers == 1:
        estimator = load_estimator(settings)  # a bad --model is one line and exit 2, before anything listens
        uvicorn.run(create_app(settings, estimator), **options)
        return 0

    OnnxAgeModel(settings.model, threads=1)  # check the model once here; each worker then loads its own
    metrics_dir = tempfile.mkdtemp(prefix="agekit-serve-metrics-")  # prometheus multiprocess files: counters only
    saved = {name: os.environ.get(name) for name in (ENV_VAR, "PROMETHEUS_MULTIPROC_DIR")}
    os.environ[ENV_VAR] = settings.to_env()  # the workers' settings (not the API keys: they read the key file)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("agekit.serve.app:app_from_env", factory=True, workers=args.workers, **options)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(metrics_dir)
        for name, value in saved.items():  # a caller from Python gets its environment back
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return 0
