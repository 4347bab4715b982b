"""agekit serve under bad input and abuse: every error is a JSON body with a stable code, and the server (the
same kind as tests/test_serve.py's: 1 thread, a queue of 2, a 4 s timeout, 3 MB uploads, 20 M pixels, an API
key) keeps serving after each: malformed bodies, limits, a client that disconnects mid-upload, a slow-loris
upload, an overload, and large uploads that must not touch the disk."""
import contextlib
import io
import json
import select
import socket
import threading
import time

import pytest
from test_serve import (
    KEY,
    TIMEOUT_S,
    api,
    assert_error,
    limited_server,
    metric,
    multipart,
    photo_bytes,
    png_bomb,
    request,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = limited_server(tmp_path_factory.mktemp("serve-faults"))
    yield srv
    srv.stop()


BAD_INPUTS = {
    "zero bytes": (lambda: (b"", "image/jpeg"), 400, "empty_body"),
    "wrong content type": (lambda: (b"hello", "text/plain"), 415, "unsupported_media_type"),
    "no content type": (lambda: (photo_bytes(), None), 415, "unsupported_media_type"),
    "not an image": (lambda: (b"this is not a photo" * 10, "image/jpeg"), 422, "bad_image"),
    "truncated jpeg": (lambda: (photo_bytes()[:3000], "image/jpeg"), 422, "bad_image"),
    "decompression bomb": (lambda: (png_bomb(), "image/png"), 413, "image_too_large"),
    "bad base64": (lambda: (b'{"image": "not base64 !!"}', "application/json"), 400, "bad_base64"),
    "json without image": (lambda: (b'{"picture": "AAAA"}', "application/json"), 400, "missing_image"),
    "json not an object": (lambda: (b'[1, 2]', "application/json"), 400, "bad_request"),
    "broken json": (lambda: (b'{"image": ', "application/json"), 400, "bad_request"),
    "json nested too deeply": (lambda: (b'{"image": ' + b"[" * 10**5 + b"]" * 10**5 + b"}", "application/json"), 400,
                                "bad_request"),
    "empty base64 image": (lambda: (b'{"image": ""}', "application/json"), 400, "empty_body"),
    "json number over python's digit limit": (lambda: (b'{"image": "AAAA", "n": ' + b"9" * 5000 + b"}",
                                                       "application/json"), 400, "bad_request"),
    "context age too large for a float": (lambda: (b'{"image": "AAAA", "context": [{"image": "AAAA", "age": '
                                                   + b"9" * 400 + b"}]}", "application/json"), 400, "bad_context"),
    "form without file": (lambda: multipart([("photo", photo_bytes(), "a.jpg")]), 400, "missing_image"),
    "form without boundary": (lambda: (b"--x\r\n", "multipart/form-data"), 400, "bad_request"),
    "garbled form": (lambda: (b"garbage", "multipart/form-data; boundary=abc"), 400, "bad_request"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_its_error(server, case):
    make, status, code = BAD_INPUTS[case]
    data, ctype = make()
    assert_error(api(server, "/v1/estimate", data, ctype), status, code)


def test_bad_parameters_paths_and_methods(server):
    data = photo_bytes()
    assert "level" in assert_error(api(server, "/v1/estimate?level=2", data, "image/jpeg"), 400, "bad_parameter")
    assert "min_age" in assert_error(api(server, "/v1/check", data, "image/jpeg"), 400, "bad_parameter")
    assert_error(api(server, "/v1/check?min_age=abc", data, "image/jpeg"), 400, "bad_parameter")
    assert_error(api(server, "/v1/nothing"), 404, "not_found")
    assert_error(api(server, "/v1/estimate", method="GET"), 405, "method_not_allowed")
    assert request(server.url + "/readyz")[0] == 200


def raw_socket(server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S + 10)
    return s


def read_answer(s: socket.socket) -> bytes:
    """One HTTP answer with a JSON body (ends with '}'), read from a raw socket, which is then closed."""
    answer = b""
    while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
        more = s.recv(65536)
        if not more:
            break
        answer += more
    s.close()
    return answer


def upload_head(length: int) -> bytes:
    return (f"POST /v1/estimate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_upload_over_the_limit(server):
    # refused from its Content-Length, before the body is read (curl, sending Expect: 100-continue, never
    # sends it); a client that sends it anyway reads the answer once the server closes
    s = raw_socket(server)
    s.sendall(upload_head(4 * 2**20) + bytes(65536))
    answer = read_answer(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "upload_too_large"
    # a chunked body, which gives no Content-Length, is cut off once over the limit
    s = raw_socket(server)
    s.sendall(upload_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"))
    with contextlib.suppress(OSError):
        for _ in range(64):
            s.sendall(b"10000\r\n" + bytes(65536) + b"\r\n")
    answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 413") and b"upload_too_large" in answer, answer[:300]


def test_client_that_disconnects_mid_upload(server):
    before = metric(server, "agekit_errors_total", '{code="client_disconnected"}')
    for _ in range(3):
        s = raw_socket(server)
        s.sendall(upload_head(500_000) + photo_bytes()[:20_000])
        s.close()
    deadline = time.monotonic() + 10
    while metric(server, "agekit_errors_total", '{code="client_disconnected"}') < before + 3:
        assert time.monotonic() < deadline, "the disconnects were not seen"
        time.sleep(0.2)
    assert api(server, "/v1/estimate", photo_bytes(), "image/jpeg")[0] == 200


def test_slow_loris_upload_times_out_and_others_are_served(server):
    s = raw_socket(server)
    s.sendall(upload_head(len(photo_bytes())))
    answer = {}

    def trickle():
        start = time.monotonic()
        data = b""
        for i in range(60):  # one byte every 0.25 s: the photo would take 5 hours
            with contextlib.suppress(OSError):
                s.sendall(photo_bytes()[i:i + 1])
            if select.select([s], [], [], 0.25)[0]:
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    more = s.recv(65536)
                    if not more:
                        break
                    data += more
                break
        answer["data"], answer["seconds"] = data, time.monotonic() - start

    t = threading.Thread(target=trickle)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert api(server, "/v1/estimate", photo_bytes(), "image/jpeg")[0] == 200  # served meanwhile
    assert time.monotonic() - start < TIMEOUT_S
    t.join()
    s.close()
    head, _, body = answer["data"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer["data"][:200]
    assert json.loads(body)["error"]["code"] == "upload_timeout"
    assert TIMEOUT_S - 0.5 < answer["seconds"] < TIMEOUT_S + 3


def test_uploads_in_flight_are_bounded(server):
    # 1 thread + a queue of 2: at most 3 bodies are read at once, so slow uploads cannot pile up in memory
    held = [raw_socket(server) for _ in range(3)]
    for s in held:
        s.sendall(upload_head(len(photo_bytes())) + photo_bytes()[:1000])
    time.sleep(0.5)
    try:
        status, headers, body = api(server, "/v1/estimate", photo_bytes(), "image/jpeg")
        assert status == 503 and body["error"]["code"] == "busy" and "uploads" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while api(server, "/v1/estimate", photo_bytes(), "image/jpeg")[0] != 200:  # the slots come back
        assert time.monotonic() < deadline, "the upload slots were not released"
        time.sleep(0.2)


def test_overload_is_shed_with_503(server):
    data = photo_bytes()
    results = [None] * 10

    def one(i):
        results[i] = api(server, "/v1/estimate", data, "image/jpeg", timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r[0] for r in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 3 and statuses.count(503) >= 1, statuses  # 1 thread + 2 waiting admitted
    for status, headers, body in results:
        if status == 503:
            assert body["error"]["code"] == "busy" and int(headers["Retry-After"]) >= 1
    assert api(server, "/v1/estimate", data, "image/jpeg")[0] == 200  # and it goes on


def test_big_uploads_are_never_written_to_disk(server):
    import numpy as np
    from PIL import Image

    def files():
        return {p.name: p.stat().st_size for p in server.spool.iterdir()}

    before = files()  # onnxruntime leaves a 51-byte session id (.ses) in TMPDIR when imported
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert 2**20 < len(buf.getvalue()) < 3 * 2**20  # over Starlette's 1 MB spooling size
    data, ctype = multipart([("file", buf.getvalue(), "noise.png")])
    status, _, doc = api(server, "/v1/estimate", data, ctype)
    assert status == 200 and doc["faces"] == []  # no face is an answer, not an error
    assert files() == before
