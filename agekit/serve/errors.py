"""Errors of the HTTP API: every one is a JSON body {"error": {"code": CODE, "message": ONE_LINE}} with a
stable code (docs/serve.md lists them) and its HTTP status."""
from __future__ import annotations

# code -> HTTP status; the codes are part of the API: never rename one
CODES = {
    "bad_request": 400,             # malformed multipart or JSON body, or a field of the wrong type
    "empty_body": 400,              # no bytes at all, or an empty image
    "missing_image": 400,           # no `file` part / no "image" key
    "bad_base64": 400,              # "image" is not base64
    "bad_parameter": 400,           # a query parameter out of range (level, min_age, probs)
    "bad_context": 400,             # context photos / ages that do not pair up, too many, a bad age
    "missing_api_key": 401,
    "invalid_api_key": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "upload_timeout": 408,          # the body did not arrive within the request timeout
    "upload_too_large": 413,        # the body is over --max-upload-mb
    "image_too_large": 413,         # the image is over --max-pixels (read from its header, never decoded)
    "unsupported_media_type": 415,  # not multipart/form-data, application/json or an image/* body
    "bad_image": 422,               # not a readable image (corrupt, truncated, not an image at all)
    "busy": 503,                    # the queue is full: try again after Retry-After seconds
    "not_ready": 503,               # the model is still loading
    "no_personalisation": 501,      # context photos given, but the model has no face NP bank beside it
    "timeout": 504,                 # scoring did not finish within the request timeout
    "internal_error": 500,          # a bug: the message says what, the server goes on
}


class ApiError(Exception):
    """An answer that is an error: code (a key of CODES), a one-line message, optional headers."""

    def __init__(self, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.status = CODES[code]
        self.message = " ".join(str(message).split())[:300]  # one line, bounded
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def image_error(exc) -> ApiError:
    """An agekit ImageError from agekit.io.read_image as an ApiError (its reason is the message)."""
    reason = exc.reason
    if reason.startswith("image too large"):
        return ApiError("image_too_large", f"{exc.path}: {reason}")
    if reason.startswith("empty file"):
        return ApiError("empty_body", f"{exc.path}: empty image (0 bytes)")
    return ApiError("bad_image", f"{exc.path}: {reason}")
