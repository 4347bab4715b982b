"""agekit serve: the real server (`python -m agekit serve`) on 127.0.0.1, talked to over real sockets.

One server for the module (packaged default model, 1 scoring thread, a queue of 2, a 4 s request timeout,
1 MB uploads, 20 M pixels, an API key), so that overload, slow uploads and size limits are quick to reach.
"""
import base64
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.jpg"
KEY = "test-key-0123456789abcdef"
TIMEOUT_S = 4


# ---- a real server in a subprocess -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m agekit serve ARGS` on a free port of 127.0.0.1; stderr (the JSON log) kept in a file."""

    def __init__(self, tmp: Path, *args, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (the server's stdout until stop())
        self.proc = subprocess.Popen([sys.executable, "-m", "agekit", "serve", "--port", str(self.port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"agekit serve exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if request(self.url + "/readyz")[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("agekit serve did not become ready in 90 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def request(url, data=None, content_type=None, headers=None, method=None, timeout=30):
    """(status, headers, body as JSON when it is JSON else bytes) over a real connection."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, body = exc.code, exc.headers, exc.read()
    if (hdrs.get("Content-Type") or "").startswith("application/json"):
        body = json.loads(body)
    return status, hdrs, body


def multipart(fields: list) -> tuple[bytes, str]:
    """A multipart/form-data body from [(name, bytes, filename or None)]."""
    boundary = "agekit-test-boundary-7f3a"
    out = io.BytesIO()
    for name, value, filename in fields:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if filename:
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + value + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def limited_server(tmp: Path) -> Server:
    """The server of these tests: 1 scoring thread, a queue of 2, a 4 s timeout, 3 MB uploads, 20 M pixels,
    an API key, and its own empty TMPDIR (`srv.spool`)."""
    (tmp / "keys.txt").write_text(f"# keys\n{KEY}\n")
    spool = tmp / "tmpdir"  # the server's TMPDIR: must stay empty (images are never written to disk)
    spool.mkdir()
    srv = Server(tmp, "--api-key-file", str(tmp / "keys.txt"), "--concurrency", "1", "--queue", "2",
                 "--timeout", str(TIMEOUT_S), "--max-upload-mb", "3", "--max-pixels", "20000000",
                 env={"TMPDIR": str(spool)})
    srv.spool = spool
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = limited_server(tmp_path_factory.mktemp("serve"))
    yield srv
    srv.stop()


def api(server, path, data=None, content_type=None, key=KEY, **kw):
    headers = {"X-API-Key": key} if key else {}
    return request(server.url + path, data, content_type, headers, **kw)


def photo_bytes() -> bytes:
    return PHOTO.read_bytes()


def predict_json(capsys, *args) -> list:
    """The faces `agekit predict --output json` gives for the photo (the CLI, in this process)."""
    from agekit.cli import main

    assert main(["predict", str(PHOTO), "--output", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)[0]["faces"]


def assert_error(result, status, code):
    got_status, headers, body = result
    assert got_status == status, body
    assert headers["Content-Type"].startswith("application/json")
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message and "\n" not in message and len(message) <= 300
    return body["error"]["message"]


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: about 50 kB that decode to side^2 pixels."""
    row = b"\x00" + bytes(side // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def metric(server, name: str, labels: str = "") -> float:
    text = api(server, "/metrics")[2].decode()
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# ---- answers ---------------------------------------------------------------------------------------------
def test_estimate_gives_the_fields_of_predict_json(server, capsys):
    data, ctype = multipart([("file", photo_bytes(), "astronaut.jpg")])
    status, headers, doc = api(server, "/v1/estimate", data, ctype)
    assert status == 200, doc
    assert re.fullmatch(r"[0-9a-f]{16}", headers["X-Request-ID"])
    assert doc["image"] == {"width": 512, "height": 512} and doc["level"] == 0.9
    assert set(doc["timing"]) == {"queue_ms", "decode_ms", "inference_ms", "total_ms"}
    assert doc["timing"]["total_ms"] >= doc["timing"]["inference_ms"] > 0
    expected = predict_json(capsys)
    assert doc["faces"] == expected  # same faces, same field names, same numbers as the CLI
    face = doc["faces"][0]
    assert 20 < face["age"] < 45 and face["interval"][0] < face["age"] < face["interval"][1]


def test_json_base64_raw_body_and_level(server):
    b64 = base64.b64encode(photo_bytes()).decode()
    by_json = api(server, "/v1/estimate", json.dumps({"image": b64}).encode(), "application/json")[2]
    by_data_url = api(server, "/v1/estimate", json.dumps({"image": "data:image/jpeg;base64," + b64}).encode(),
                      "application/json")[2]
    raw = api(server, "/v1/estimate?level=0.5&probs=true", photo_bytes(), "image/jpeg")[2]
    assert by_json["faces"] == by_data_url["faces"]
    a, b = by_json["faces"][0], raw["faces"][0]
    assert a["age"] == b["age"] and b["level"] == raw["level"] == 0.5
    assert b["interval"][0] > a["interval"][0] and b["interval"][1] < a["interval"][1]  # 50% inside 90%
    assert "probs" not in a and len(b["probs"]) == 101 and raw["ages"] == [0, 100]
    assert sum(b["probs"]) == pytest.approx(1.0, abs=1e-3)
    mean = sum(age * p for age, p in enumerate(b["probs"]))
    assert mean == pytest.approx(b["age"], abs=0.05)  # the age is the distribution's mean


def test_interval_at_a_requested_level_by_hand(server):
    # split-conformal: age +- q(level) * max(std, std_floor), q from the model's calibration (q(0.8) = 1.0885...)
    from agekit import AgeEstimator

    calibration = AgeEstimator().model.meta["calibration"]
    q, floor = calibration["quantiles"]["0.8"], calibration["std_floor"]
    face = api(server, "/v1/estimate?level=0.8", photo_bytes(), "image/jpeg")[2]["faces"][0]
    half = q * max(face["std"], floor)
    assert face["level"] == 0.8
    assert face["interval"] == pytest.approx([face["age"] - half, face["age"] + half], abs=0.02)


def test_workers_share_out_requests_and_sum_metrics(tmp_path):
    (tmp_path / "keys.txt").write_text(f"{KEY}\n")
    srv = Server(tmp_path, "--workers", "2", "--concurrency", "1", "--api-key-file", str(tmp_path / "keys.txt"))
    try:
        answers = [None] * 6

        def one(i):
            answers[i] = api(srv, "/v1/estimate", photo_bytes(), "image/jpeg")[0]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(answers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 6
        assert api(srv, "/v1/estimate", photo_bytes(), "image/jpeg", key=None)[0] == 401  # workers check keys
        text = api(srv, "/metrics")[2].decode()
        assert 'agekit_requests_total{endpoint="/v1/estimate",status="200"} 6.0' in text  # summed over workers
        time.sleep(0.3)
        lines = [json.loads(line) for line in srv.log_path.read_text().splitlines() if line.strip()]
        workers = {r["pid"] for r in lines if r["msg"].startswith("Started server process")}
        served = [r["pid"] for r in lines if r.get("event") == "request" and r["path"] == "/v1/estimate"]
        assert len(workers) == 2 and len(served) == 7 and set(served) <= workers  # 6 answered, 1 refused
        for pid in workers:  # the keys are read from the key file, never passed in the environment
            assert KEY.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        srv.stop()


def test_check_decisions_follow_the_interval(server, capsys):
    data, ctype = multipart([("file", photo_bytes(), "a.jpg")])
    answers = {}
    for t in (18, 30, 60):
        status, _, doc = api(server, f"/v1/check?min_age={t}", data, ctype)
        assert status == 200 and doc["min_age"] == t
        answers[t] = doc["faces"][0]
    lo, hi = answers[18]["interval"]
    for t, face in answers.items():
        want = "over" if lo >= t else "under" if hi < t else "uncertain"
        assert face["decision"] == want
    assert answers[18]["decision"] == "over" and answers[60]["decision"] == "under"
    assert answers[30]["decision"] == "uncertain"
    assert answers[18]["p_over"] > answers[30]["p_over"] > answers[60]["p_over"]
    assert answers[18]["p_over"] > 0.9 and answers[60]["p_over"] < 0.1
    from agekit.cli import main

    assert main(["check", "--min-age", "30", str(PHOTO), "--output", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["faces"][0]
    assert answers[30] == cli  # same fields as `agekit check --output json`


def test_context_personalises(server):
    photo = photo_bytes()
    data, ctype = multipart([("file", photo, "q.jpg"), ("context", photo, "c1.jpg"), ("context_age", b"25", None)])
    status, _, doc = api(server, "/v1/estimate", data, ctype)
    assert status == 200, doc
    face = doc["faces"][0]
    assert face["personalised"] is True and face["notes"]
    assert 25 < face["age"] < face["base_age"]  # pulled from the model's own estimate towards the given age
    b64 = base64.b64encode(photo).decode()
    body = json.dumps({"image": b64, "context": [{"image": b64, "age": 25}]}).encode()
    assert api(server, "/v1/estimate", body, "application/json")[2]["faces"][0]["age"] == face["age"]
    bad, ctype = multipart([("file", photo, "q.jpg"), ("context", photo, "c1.jpg")])
    assert "context_age" in assert_error(api(server, "/v1/estimate", bad, ctype), 400, "bad_context")
    too_old = json.dumps({"image": b64, "context": [{"image": b64, "age": 400}]}).encode()
    assert_error(api(server, "/v1/estimate", too_old, "application/json"), 400, "bad_context")


def test_model_health_ready_docs(server):
    from agekit import AgeEstimator

    status, _, facts = api(server, "/v1/model")
    assert status == 200
    meta = AgeEstimator().model.meta
    assert facts["model"] == "agekit-default.onnx" and facts["calibrated"] is True
    assert facts["calibration"]["coverage"] == meta["calibration"]["coverage"]
    assert facts["test_metrics"]["mae"] == meta["test_metrics"]["metrics"]["mae"]
    assert "non-commercial" in facts["licence"]
    assert request(server.url + "/healthz")[:3:2] == (200, {"status": "ok"})
    status, _, ready = request(server.url + "/readyz")
    assert status == 200 and ready["capacity"] == 3
    status, _, spec = request(server.url + "/openapi.json")
    assert {"/v1/estimate", "/v1/check", "/v1/model"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/estimate"]["post"]["requestBody"]["content"]
    status, _, docs = request(server.url + "/docs")
    assert status == 200 and b"swagger" in docs.lower()


def test_page_needs_nothing_from_elsewhere(server):
    status, headers, page = request(server.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    for asset in re.findall(r'(?:src|href)="([^"]+)"', text):
        assert asset.startswith("/"), asset  # everything from this server
        assert api(server, asset)[0] == 200
    js = request(server.url + "/static/app.js")[2].decode()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", js + text)


# ---- keys, limits, bad input: every error is JSON with a stable code; the server goes on ----------------------
def test_api_key(server):
    data, ctype = multipart([("file", photo_bytes(), "a.jpg")])
    assert_error(api(server, "/v1/estimate", data, ctype, key=None), 401, "missing_api_key")
    assert_error(api(server, "/v1/estimate", data, ctype, key="wrong-key-0123456789"), 401, "invalid_api_key")
    assert_error(api(server, "/v1/model", key="x"), 401, "invalid_api_key")
    assert_error(api(server, "/metrics", key=None), 401, "missing_api_key")
    assert request(server.url + "/healthz")[0] == 200  # probes and the page need no key
    assert request(server.url + "/")[0] == 200


def test_metrics_and_logs(server):
    api(server, "/v1/estimate", photo_bytes(), "image/jpeg")
    api(server, "/v1/estimate", b"", "image/jpeg")
    api(server, "/v1/estimate", png_bomb(), "image/png")
    assert metric(server, "agekit_requests_total", '{endpoint="/v1/estimate",status="200"}') >= 1
    assert metric(server, "agekit_request_seconds_count", '{endpoint="/v1/estimate"}') >= 1
    assert metric(server, "agekit_faces_total") >= 1
    assert metric(server, "agekit_errors_total", '{code="empty_body"}') >= 1
    assert metric(server, "agekit_queue_depth") == 0
    time.sleep(0.3)
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    requests_ = [r for r in lines if r.get("event") == "request"]
    assert requests_ and all({"request_id", "status", "ms", "path"} <= set(r) for r in requests_)
    assert any(r["status"] == 200 and r.get("faces") == 1 for r in requests_)
    assert any(r.get("error_code") == "image_too_large" for r in requests_)
    log = server.log_path.read_text()
    b64 = base64.b64encode(photo_bytes()).decode()
    assert b64[1000:1040] not in log and "JFIF" not in log  # no image, as bytes or base64, is ever logged


def test_bad_serve_options_are_one_line(tmp_path, capsys):
    from agekit.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert main(["serve", "--api-key-file", str(tmp_path / "none.txt")]) == 2
    (tmp_path / "short.txt").write_text("abc\n")
    assert main(["serve", "--api-key-file", str(tmp_path / "short.txt")]) == 2
    assert main(["serve", "--concurrency", "0"]) == 2
    assert main(["serve", "--max-connections", "0"]) == 2
    assert main(["serve", "--max-upload-mb", "inf"]) == 2
    assert main(["serve", "--timeout", "nan"]) == 2
    err = capsys.readouterr().err
    assert "missing.onnx" in err and "none.txt" in err and "16 characters" in err and "--concurrency" in err
    assert "--max-connections" in err and "--max-upload-mb" in err and "--timeout" in err
    assert "Traceback" not in err
