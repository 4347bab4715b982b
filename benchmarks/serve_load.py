"""Load and overload of `agekit serve` over loopback: throughput, latency percentiles, errors, server memory.

    python benchmarks/serve_load.py [--clients 16] [--requests 1500] [--overload-clients 64]
        [--overload-requests 20000] [--polite-requests 1500] [--chips 300] [--data ../shared/data] [--out benchmarks/results/serve_load]

Starts `python -m agekit serve` on 127.0.0.1 with its defaults (2 scoring threads, a queue of 16; `--server-args`
adds options) and runs two phases against it with threaded keep-alive HTTP clients, each client sending its
next request as soon as it has its answer (closed loop):
- load: --clients clients (default 16, all of which the queue admits), --requests requests;
- overload: --overload-clients clients (default 64, far more than the 18 requests the server admits), first
  clients that send again at once after a 503 (the worst case: Retry-After ignored; --overload-requests),
  then clients that wait the Retry-After seconds (--polite-requests). The server must shed the excess with
  503 `busy` at once: no timeouts, no connection errors, no crash, and the requests it admits still
  answered within the queue's bound.
Photos: examples/astronaut.jpg (every 10th request) and --chips UTKFace face chips (200x200 JPEGs, a seeded
sample) read into memory at run time from --data/UTKFace when present (nothing is copied or saved).
The server's resident memory (VmRSS, and its peak VmHWM) is read from /proc before and after each phase.

Writes OUT.json and OUT.md (command, machine, date, numbers). Each phase also stops after --max-seconds.
The clients run on the same machine as the server, so they take some of its CPU.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.jpg"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--overload-clients", type=int, default=64)
    p.add_argument("--overload-requests", type=int, default=20000, help="for clients that retry at once")
    p.add_argument("--polite-requests", type=int, default=1500,
                   help="for the overload by clients that wait Retry-After seconds after a 503")
    p.add_argument("--chips", type=int, default=300, help="UTKFace chips to sample (0: the astronaut only)")
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--server-args", default="", help="more `agekit serve` options, e.g. '--workers 2'")
    p.add_argument("--max-seconds", type=float, default=90, help="each phase stops after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load"))
    return p.parse_args(argv)


def photos(args) -> tuple[list[bytes], dict]:
    """The request bodies: the astronaut, then the sampled chips (bytes in memory only)."""
    chips_dir = Path(args.data) / "UTKFace"
    chips = []
    if args.chips and chips_dir.is_dir():
        names = sorted(n for n in os.listdir(chips_dir) if n.endswith(".jpg"))
        chips = [(chips_dir / n).read_bytes() for n in random.Random(args.seed).sample(names, min(args.chips, len(names)))]
    info = {"astronaut": "examples/astronaut.jpg (512x512), every 10th request",
            "utkface_chips": len(chips), "utkface_note": "200x200 JPEG face chips, a seeded sample read at run time"}
    return [PHOTO.read_bytes()] + chips, info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict:
    """VmRSS and VmHWM (MB) of the server and its child processes (uvicorn workers)."""
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    out = {"rss": 0.0, "peak": 0.0}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out["rss"] += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["peak"] += int(line.split()[1]) / 1024
        except OSError:
            pass
    return {k: round(v, 1) for k, v in out.items()}


def start_server(port: int, extra: list[str], log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agekit", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"agekit serve exited {proc.returncode}; see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("agekit serve did not become ready in 120 s")


def run_phase(port: int, bodies: list[bytes], clients: int, total: int, max_seconds: float,
              honour_retry_after: bool = False) -> dict:
    """`clients` threads send POST /v1/estimate (raw JPEG bodies) until `total` requests or max_seconds;
    after a 503 a client sends its next request at once, or after Retry-After seconds."""
    lock = threading.Lock()
    counter = {"next": 0}
    records = []  # (status or error name, seconds)
    stop_at = time.monotonic() + max_seconds

    def take() -> int | None:
        with lock:
            i = counter["next"]
            if i >= total or time.monotonic() > stop_at:
                return None
            counter["next"] += 1
            return i

    def client():
        conn = None
        while (i := take()) is not None:
            body = bodies[0] if i % 10 == 0 or len(bodies) == 1 else bodies[1 + i % (len(bodies) - 1)]
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/v1/estimate", body, {"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                resp.read()
                outcome = resp.status
                wait = float(resp.getheader("Retry-After") or 0) if outcome == 503 and honour_retry_after else 0
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcome, wait = type(exc).__name__, 0
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                records.append((outcome, time.perf_counter() - start))
            time.sleep(wait)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    counts: dict = {}
    for outcome, _ in records:
        counts[str(outcome)] = counts.get(str(outcome), 0) + 1
    ok = sorted(s for o, s in records if o == 200)
    shed = sorted(s for o, s in records if o == 503)
    return {"clients": clients, "requests": len(records), "seconds": round(seconds, 1), "outcomes": counts,
            "ok_per_s": round(len(ok) / seconds, 2), "requests_per_s": round(len(records) / seconds, 1),
            "latency_ms_ok": percentiles(ok), "latency_ms_503": percentiles(shed)}


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": round(qs[49] * 1000, 1), "p95": round(qs[94] * 1000, 1), "p99": round(qs[98] * 1000, 1),
            "max": round(max(values) * 1000, 1), "n": len(values)}


def server_counts(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("agekit_requests_total{endpoint=\"/v1/estimate\"", "agekit_errors_total", "agekit_faces_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def versions() -> dict:
    out = {}
    for dist in ("agekit", "fastapi", "uvicorn", "starlette", "onnxruntime", "prometheus-client"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def markdown(doc: dict) -> str:
    lines = [f"# agekit serve under load ({doc['date'][:10]})", "",
             f"Command: `{doc['command']}`", "",
             f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, load average at the start "
             f"{doc['machine']['load_average'][0]:.1f} (a shared machine: other jobs ran at the same time); "
             f"Python {doc['machine']['python']}; clients on the same machine, over loopback.", "",
             f"Server: `agekit serve {doc['server_args']}` (model {doc['model']}); photos: the astronaut every 10th "
             f"request, else one of {doc['photos']['utkface_chips']} UTKFace chips (raw JPEG bodies to "
             "/v1/estimate).", "",
             "| phase | clients | requests | s | answered 200 /s | outcomes | p50 / p95 / p99 / max ms (200) "
             "| p50 / p99 ms (503) | server RSS MB before -> after (peak) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ph in doc["phases"]:
        ok, shed = ph["latency_ms_ok"] or {}, ph["latency_ms_503"]
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(ph["outcomes"].items()))
        lines.append(f"| {ph['name']} | {ph['clients']} | {ph['requests']} | {ph['seconds']} | {ph['ok_per_s']} | "
                     f"{outcomes} | {ok.get('p50')} / {ok.get('p95')} / {ok.get('p99')} / {ok.get('max')} | "
                     f"{'-' if not shed else str(shed['p50']) + ' / ' + str(shed['p99'])} | {ph['rss_before']['rss']} -> "
                     f"{ph['rss_after']['rss']} ({ph['rss_after']['peak']}) |")
    lines += ["", f"Server alive and ready after every phase: {doc['alive_after']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from agekit import machine

    bodies, photo_info = photos(args)
    port = free_port()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.server_args)
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_load_{port}.log"
    doc = {"command": " ".join(["python benchmarks/serve_load.py"] + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine.describe(),
           "versions": versions(), "server_args": " ".join(extra) or "(defaults: --concurrency 2 --queue 16)",
           "model": "default", "photos": photo_info, "phases": []}
    proc = start_server(port, extra, log_path)
    try:
        run_phase(port, bodies, 2, 10, 60)  # warm-up, not reported
        for name, clients, total, polite in (
                ("load", args.clients, args.requests, False),
                ("overload, clients retry at once", args.overload_clients, args.overload_requests, False),
                ("overload, clients wait Retry-After", args.overload_clients, args.polite_requests, True)):
            before = rss_mb(proc.pid)
            phase = run_phase(port, bodies, clients, total, args.max_seconds, polite)
            phase.update(name=name, rss_before=before, rss_after=rss_mb(proc.pid))
            doc["phases"].append(phase)
            print(json.dumps(phase), flush=True)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/readyz")
        doc["alive_after"] = conn.getresponse().status == 200 and proc.poll() is None
        doc["server_metrics"] = server_counts(port)
    finally:
        proc.terminate()
        proc.wait(30)
    Path(f"{out}.json").write_text(json.dumps(doc, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
