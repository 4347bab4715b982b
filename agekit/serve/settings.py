"""ServeSettings: everything `agekit serve` is configured with, checked once; passed to worker processes as
JSON in an environment variable (uvicorn starts each worker by importing the app factory)."""
from __future__ import annotations

import dataclasses
import hmac
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from agekit.errors import AgekitError

ENV_VAR = "AGEKIT_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    """model: 'default', 'fast' or an ONNX file; level: default interval level (a request may ask another);
    concurrency: images scored at once per process (threads); queue: requests allowed to wait for a thread
    beyond those (more are answered 503 with Retry-After); timeout: seconds for one request, from its first
    byte to its answer (receiving the upload, waiting and scoring); max_upload_mb: largest request body;
    max_pixels: largest image (width x height, checked from the header before decoding); max_context: most
    context photos per request; api_keys: accepted X-API-Key values (empty: no key needed); cors_origins:
    origins allowed by CORS (empty: CORS off); threads: onnxruntime threads per session (None: default)."""

    model: str | None = None
    level: float = 0.9
    concurrency: int = 2
    queue: int = 16
    timeout: float = 30.0
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_context: int = 16
    threads: int | None = None
    api_keys: list = field(default_factory=list)
    api_key_file: str | None = None  # where api_keys came from: worker processes read the keys from it
    cors_origins: list = field(default_factory=list)
    retry_after: int = 1
    log_level: str = "info"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def check(self) -> ServeSettings:
        """AgekitError naming the option when a value is out of range."""
        if not 0 < self.level < 1:
            raise AgekitError(f"--level must be between 0 and 1, got {self.level}")
        for name, value, low in (("--concurrency", self.concurrency, 1), ("--queue", self.queue, 0),
                                 ("--max-pixels", self.max_pixels, 1), ("--max-context", self.max_context, 0)):
            if value < low:
                raise AgekitError(f"{name} must be >= {low}, got {value}")
        if not 0 < self.timeout < math.inf:
            raise AgekitError(f"--timeout must be a number of seconds > 0, got {self.timeout}")
        if not 0 < self.max_upload_mb < math.inf:
            raise AgekitError(f"--max-upload-mb must be a number > 0, got {self.max_upload_mb}")
        return self

    def key_ok(self, given: str | None) -> bool:
        """Whether a request's X-API-Key is accepted (compared in constant time)."""
        if not self.api_keys:
            return True
        given_b = (given or "").encode()
        return any(hmac.compare_digest(given_b, k.encode()) for k in self.api_keys)

    def to_env(self) -> str:
        """The settings for worker processes, without the keys themselves (an environment can be read by other
        processes of the user): a worker reads them again from api_key_file."""
        return json.dumps({**dataclasses.asdict(self), "api_keys": []})

    @classmethod
    def from_env(cls) -> ServeSettings:
        text = os.environ.get(ENV_VAR)
        if not text:
            return cls()
        settings = cls(**json.loads(text))
        if settings.api_key_file:
            settings.api_keys = read_api_keys(settings.api_key_file)
        return settings.check()


def read_api_keys(path) -> list[str]:
    """The keys of an --api-key-file: one a line; blank lines and lines starting with # are ignored."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise AgekitError(f"--api-key-file {path}: cannot read it ({reason})") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise AgekitError(f"--api-key-file {path}: holds no key (one key a line)")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise AgekitError(f"--api-key-file {path}: a key must be at least 16 characters ({len(short)} shorter)")
    return keys
