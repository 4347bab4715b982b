"""Request bodies, read into memory only (images are never written to disk) and bounded in size and time.

Three forms carry an image: multipart/form-data (part `file`; context photos as parts `context` with their
ages in parts `context_age`, in the same order), application/json ({"image": BASE64, "context": [{"image":
BASE64, "age": 31}, ...]}; a data: URL prefix is allowed), or the image bytes themselves (image/* or
application/octet-stream). Multipart is parsed with python-multipart's push parser into memory: Starlette's
own form parser spools parts over 1 MB to temporary files, which this service must not do.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect  # noqa: F401  (re-exported for app.py)

from agekit.serve.errors import ApiError

IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass
class Upload:
    """What a request gave: the image's bytes and its context photos [(bytes, age), ...]."""

    image: bytes
    context: list = field(default_factory=list)


async def read_body(request, limit: int, seconds: float) -> bytes:
    """The whole body, at most `limit` bytes, within `seconds`: ApiError upload_too_large (from
    Content-Length before reading, or while reading) or upload_timeout. A client that goes away raises
    ClientDisconnect."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise ApiError("bad_request", f"Content-Length {length[:40]!r} is not a number")
        if int(length) > limit:
            raise ApiError("upload_too_large", f"the body is {int(length):,} bytes; the limit is {limit:,}")

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError("upload_too_large", f"the body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout=max(seconds, 0.001))
    except asyncio.TimeoutError:
        raise ApiError("upload_timeout", f"the upload did not arrive within {seconds:.0f} s") from None


def parse_upload(content_type: str | None, body: bytes, max_context: int) -> Upload:
    """An Upload from a body by its Content-Type; ApiError naming the field for anything wrong."""
    if not body:
        raise ApiError("empty_body", "the request body is empty (0 bytes); send an image")
    kind, options = parse_options_header(content_type or "")
    kind = kind.decode("latin-1").lower()
    if kind == "multipart/form-data":
        return _from_multipart(body, options.get(b"boundary"), max_context)
    if kind == "application/json" or kind.endswith("+json"):
        return _from_json(body, max_context)
    if kind.startswith(IMAGE_TYPES):
        return Upload(body)
    shown = kind or "none"
    raise ApiError("unsupported_media_type", f"Content-Type {shown[:60]} is not accepted; send multipart/form-data "
                                             "(field 'file'), application/json ({\"image\": base64}) or image/*")


def _from_multipart(body: bytes, boundary: bytes | None, max_context: int) -> Upload:
    if not boundary:
        raise ApiError("bad_request", "multipart/form-data without a boundary")
    parts: list[dict] = []
    header = {"field": b"", "value": b""}

    def on_part_begin():
        if len(parts) >= 2 * max_context + 8:
            raise ApiError("bad_request", f"too many parts in the form (at most {2 * max_context + 8})")
        parts.append({"headers": {}, "data": []})

    def on_header_field(data, start, end):
        header["field"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        parts[-1]["headers"][header["field"].decode("latin-1").lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_part_data(data, start, end):
        parts[-1]["data"].append(data[start:end])

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart raises its own errors for malformed bodies
        raise ApiError("bad_request", f"malformed multipart body ({type(exc).__name__})") from None
    fields: dict[str, list[bytes]] = {}
    for part in parts:
        _, opts = parse_options_header(part["headers"].get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        fields.setdefault(name, []).append(b"".join(part["data"]))
    if "file" not in fields:
        raise ApiError("missing_image", "the form has no 'file' field with the image"
                                        + (f" (fields: {', '.join(sorted(fields))[:80]})" if fields else ""))
    if len(fields["file"]) > 1:
        raise ApiError("bad_request", "one image per request: the form has several 'file' fields")
    photos, ages = fields.get("context", []), fields.get("context_age", [])
    if len(photos) != len(ages):
        raise ApiError("bad_context", f"{len(photos)} 'context' photos but {len(ages)} 'context_age' values; "
                                      "give one age per photo, in the same order")
    ages = [a.decode("utf-8", "replace") for a in ages]
    return Upload(fields["file"][0], _context(list(zip(photos, ages)), max_context))


def _b64(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError("bad_request", f"{where} must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:"):  # a data URL, as a browser's FileReader gives it
        value = value.partition(",")[2]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("bad_base64", f"{where} is not valid base64") from None


def _from_json(body: bytes, max_context: int) -> Upload:
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ApiError("bad_request", "the JSON body is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ApiError("bad_request", f"the body is not valid JSON ({detail})") from None
    except ValueError:  # Python's limit on digits in an integer (int_max_str_digits)
        raise ApiError("bad_request", "the JSON body has a number with too many digits") from None
    if not isinstance(doc, dict):
        raise ApiError("bad_request", "the JSON body must be an object {\"image\": base64, ...}")
    if "image" not in doc:
        raise ApiError("missing_image", "the JSON body has no \"image\" key (the image as base64)")
    context = doc.get("context") or []
    if not isinstance(context, list):
        raise ApiError("bad_context", "\"context\" must be a list of {\"image\": base64, \"age\": number}")
    pairs = []
    for i, item in enumerate(context):
        if not isinstance(item, dict) or "image" not in item or "age" not in item:
            raise ApiError("bad_context", f"context[{i}] must be an object {{\"image\": base64, \"age\": number}}")
        pairs.append((_b64(item["image"], f"context[{i}].image"), item["age"]))
    return Upload(_b64(doc["image"], "\"image\""), _context(pairs, max_context))


def _context(pairs, max_context: int) -> list:
    if len(pairs) > max_context:
        raise ApiError("bad_context", f"{len(pairs)} context photos; at most {max_context} per request")
    out = []
    for i, (data, age) in enumerate(pairs):
        try:
            value = float(age)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
            raise ApiError("bad_context", f"context[{i}]: age {str(age)[:20]!r} is not a number") from None
        if isinstance(age, bool) or not math.isfinite(value) or not 0 <= value <= 120:
            raise ApiError("bad_context", f"context[{i}]: age {str(age)[:20]} must be between 0 and 120")
        if not data:
            raise ApiError("bad_context", f"context[{i}]: the photo is empty (0 bytes)")
        out.append((data, value))
    return out
