"""The FastAPI application of `agekit serve`: create_app(settings) -> app. Routes (docs/serve.md):

POST /v1/estimate   every face: age, std, interval, gender, box, landmarks, flags (+ probs, context)
POST /v1/check      over / under / uncertain with P(age >= min_age) per face
GET  /v1/model      model card facts: data, metrics, licence, calibration
GET  /healthz, /readyz, /metrics; /docs (OpenAPI); / (the web page, agekit/serve/static)

Request bodies are read into memory only, and neither images nor bodies are ever logged (agekit.serve.body).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from agekit import __version__
from agekit.serve.body import ClientDisconnect, parse_upload, read_body
from agekit.serve.errors import ApiError
from agekit.serve.inference import InferencePool, score
from agekit.serve.metrics import Metrics
from agekit.serve.settings import ServeSettings

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("agekit.serve")

_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "the photo"},
            "context": {"type": "array", "items": {"type": "string", "format": "binary"},
                        "description": "photos of the same person with known ages (personalised estimate)"},
            "context_age": {"type": "array", "items": {"type": "number"},
                            "description": "the age in each context photo, in the same order"}}}},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "description": "the photo, base64 (a data: URL is accepted)"},
            "context": {"type": "array", "items": {"type": "object", "properties": {
                "image": {"type": "string"}, "age": {"type": "number"}}}}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}
_ERRORS = {status: {"description": "an error: {\"error\": {\"code\": CODE, \"message\": ...}}"}
           for status in (400, 401, 408, 413, 415, 422, 503, 504)}


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's `fields`."""

    def format(self, record):
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
               "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, default=str)


def log_config(level: str = "info") -> dict:
    """logging.config dict for uvicorn and agekit.serve: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": f"{__name__}.JsonLogFormatter"}},
            "handlers": {"stderr": handler},
            "root": {"handlers": ["stderr"], "level": "WARNING"},  # any other library: JSON too
            "loggers": {**{name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
                           for name in ("agekit.serve", "uvicorn", "uvicorn.error")},
                        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # ours: RequestLog
                        # it logs bytes of malformed bodies; the client gets a bad_request answer instead
                        "python_multipart": {"level": "CRITICAL"}}}


class RequestLog:
    """ASGI middleware: a request id (X-Request-ID), one structured log line and the metrics per request.
    Only the method, path, status, time, face count and error code are logged: never a body."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": None}

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            state = scope["state"]
            seconds = time.perf_counter() - start
            endpoint = self.metrics.endpoint(scope["path"])
            code = status["code"] or 499  # 499: the client went away before an answer
            self.metrics.requests.labels(endpoint, str(code)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if state.get("error_code"):
                self.metrics.errors.labels(state["error_code"]).inc()
            fields = {"event": "request", "request_id": rid, "method": scope["method"], "path": scope["path"],
                      "status": code, "ms": round(seconds * 1000, 1),
                      "client": (scope.get("client") or ("", 0))[0]}
            for key in ("faces", "error_code"):
                if key in state:
                    fields[key] = state[key]
            if endpoint not in ("/healthz", "/readyz", "/metrics", "/static"):
                log.info("request", extra={"fields": fields})


def _error_response(request: Request, err: ApiError) -> JSONResponse:
    request.state.error_code = err.code
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def model_facts(est) -> dict:
    """GET /v1/model: what is running and what is known of it (the model's metadata and model card)."""
    meta = est.model.meta
    facts = {"agekit_version": __version__, **est.describe()}
    facts["model"] = Path(facts["model"]).name
    facts["gender"] = bool(meta.get("gender"))
    facts["training_data"] = {"dataset": meta.get("dataset"), "split": (meta.get("split") or {}).get("file")
                              or (meta.get("split") or {}).get("kind")}
    tm = (meta.get("test_metrics") or {})
    m = tm.get("metrics") or {}
    facts["test_metrics"] = {"dataset": tm.get("dataset"), "split": tm.get("split"), **{
        k: m[k] for k in ("n", "mae", "mae_ci95", "rmse", "gender_accuracy", "coverage") if k in m}}
    c = est.calibration or {}
    facts["calibration"] = {k: c[k] for k in ("method", "level", "n", "coverage", "std_floor") if k in c} or None
    card = Path(est.model.path).with_name("MODEL_CARD.md")
    licence = None
    if card.is_file() and Path(est.model.path).parent == STATIC.parent.parent / "weights":
        found = re.search(r"\*\*Licence: ([^*]+)\*\*", card.read_text(encoding="utf-8"))
        licence = found.group(1).strip().rstrip(".") if found else None
        facts["model_card"] = "agekit/weights/MODEL_CARD.md"
    facts["licence"] = licence or meta.get("licence") or "not stated in the model; ask its provider"
    return facts


def create_app(settings: ServeSettings | None = None, estimator=None):
    """The service as an ASGI app (the FastAPI app is its `.app`). estimator: an AgeEstimator already loaded
    (else one is loaded at start-up, before the server takes connections)."""
    settings = (settings or ServeSettings()).check()
    metrics = Metrics()
    pool = InferencePool(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await pool.start(estimator)
        yield
        pool.close()

    app = FastAPI(title="agekit", version=__version__, lifespan=lifespan,
                  description="Age (with a calibrated interval) and gender of every face in a photo, and age "
                              "checks (over / under / uncertain). Images are held in memory only: never "
                              "written to disk, never logged. Errors are JSON: {\"error\": {\"code\", "
                              "\"message\"}}. See docs/serve.md.")
    app.state.pool, app.state.settings, app.state.metrics = pool, settings, metrics

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, err: ApiError):
        return _error_response(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = {404: f"no such path: {request.url.path[:100]}",
                   405: f"{request.method} is not allowed on {request.url.path[:100]}"}.get(exc.status_code,
                                                                                             str(exc.detail))
        return _error_response(request, ApiError(code, message))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query") or "request"
        return _error_response(request, ApiError("bad_parameter", f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.error("unexpected error", exc_info=exc, extra={"fields": {"event": "bug", "path": request.url.path}})
        return _error_response(request, ApiError("internal_error", f"unexpected error ({type(exc).__name__})"))

    async def api_key(request: Request):
        # a dependency of the /v1 routes and /metrics: checked before the body is read
        if settings.api_keys:
            given = request.headers.get("x-api-key")
            if not given:
                raise ApiError("missing_api_key", "this server needs an X-API-Key header")
            if not settings.key_ok(given):
                raise ApiError("invalid_api_key", "the X-API-Key is not accepted")

    keyed = [Depends(api_key)]

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key"], max_age=600)

    async def handle(request: Request, level, probs: bool, min_age) -> JSONResponse:
        started = time.perf_counter()
        deadline = time.monotonic() + settings.timeout
        pool.check_ready()
        pool.check_room()  # shed before reading the upload; checked again when it is admitted
        try:
            with pool.upload_slot():
                body = await read_body(request, settings.max_upload_bytes, settings.timeout)
        except ClientDisconnect:
            request.state.error_code = "client_disconnected"
            return Response(status_code=499)  # never sent: the client is gone
        upload = parse_upload(request.headers.get("content-type"), body, settings.max_context)
        del body
        est = pool.estimator_at(level)
        doc = await pool.run(lambda waited: score(pool, est, upload, min_age, probs, waited), deadline)
        doc["timing"]["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
        request.state.faces = len(doc["faces"])
        return JSONResponse(doc)

    level_q = Query(None, gt=0, lt=1, description="interval level (default: the server's --level)")
    probs_q = Query(False, description="add each face's distribution over the integer ages ('probs')")

    @app.post("/v1/estimate", dependencies=keyed, openapi_extra={"requestBody": _IMAGE_BODY}, responses=_ERRORS,
              summary="age, interval, gender, box and landmarks of every face")
    async def estimate(request: Request, level: float | None = level_q, probs: bool = probs_q):
        return await handle(request, level, probs, None)

    @app.post("/v1/check", dependencies=keyed, openapi_extra={"requestBody": _IMAGE_BODY}, responses=_ERRORS,
              summary="age check: over / under / uncertain per face, with P(age >= min_age)")
    async def check(request: Request, min_age: float = Query(..., ge=0, le=120, description="the age threshold"),
                    level: float | None = level_q, probs: bool = probs_q):
        return await handle(request, level, probs, min_age)

    @app.get("/v1/model", dependencies=keyed, summary="model card facts: data, metrics, licence, calibration")
    async def model():
        pool.check_ready()
        return model_facts(pool.estimator)

    @app.get("/healthz", summary="the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and the queue has room")
    async def readyz():
        pool.check_ready()
        if pool.admitted >= pool.capacity:
            raise ApiError("busy", "the queue is full", {"Retry-After": str(settings.retry_after)})
        return {"status": "ready", "queue": pool.admitted, "capacity": pool.capacity}

    @app.get("/metrics", dependencies=keyed, summary="Prometheus metrics", include_in_schema=False)
    async def prometheus():
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return RequestLog(app, metrics)  # outermost: it sees every answer, also those of Starlette's error handler


def app_from_env():
    """uvicorn's factory for worker processes (`--workers N`): settings from AGEKIT_SERVE_SETTINGS (uvicorn
    configures their logging from the same log_config)."""
    return create_app(ServeSettings.from_env())
