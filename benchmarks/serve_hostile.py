"""``osrkit serve`` under hostile input (issue 22): each attack against the real server on
loopback, with its outcome, the server's memory and ``/healthz`` latency meanwhile.

    python benchmarks/serve_hostile.py [--model MODEL_DIR] [--out benchmarks/results]

Cases: a 169-megapixel PNG bomb (one, and 4 concurrent requests of 4), 16 images at the
pixel cap (4 requests of 4, decoded), a PNG over Pillow's own limit, a truncated image,
2,000,000 base64 entries in JSON, JSON nested 100,000 deep, 65 images, a content-length of
1 GB, 8 clients trickling headers and 8 trickling bodies, 150 idle connections (past
``--max-connections``). Per case: the statuses the attack got and its longest wait; the
server process's peak and final RSS against its idle RSS (sampled every 5 ms; the scoring
worker is another process); ``/healthz`` p50/p99/max from a client in another process
polling every 20 ms, and how many of those polls failed. Goals: every case a 4xx (or a
closed connection) within a bounded wait, zero 5xx, peak RSS under 1.5x idle, /healthz
p99 under 50 ms. Writes OUT/serve_hostile.json and OUT/serve_hostile.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.hardware import machine_info, usable_cores
from osrkit.perf.serve_load import BOUNDARY, _small_model, start_server, stop_server
from osrkit.serve import ServeOptions

HOST = "127.0.0.1"


def png_of_zeros(width: int, height: int) -> bytes:
    """A real grayscale PNG of ``width x height`` black pixels, compressed row by row (the
    bomb is 164 KB for 169 megapixels; nothing of its decoded size is ever held here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def multipart(images: list[bytes]) -> tuple[bytes, str]:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def raw_request(body: bytes, content_type: str, length: int | None = None) -> bytes:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body) if length is None else length}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def exchange(
    port: int, request: bytes, pause: float = 0.0, chunk: int = 0, at_once: int = 0
) -> tuple[str, float]:
    """Send ``request`` on a new connection (all at once, or its first ``at_once`` bytes and
    then ``chunk`` bytes every ``pause`` seconds until the server answers or closes); its
    status (or how it ended) and seconds."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = b""
    try:
        if chunk:
            writer.write(request[:at_once])
            for i in range(at_once, len(request), chunk):
                writer.write(request[i : i + chunk])
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(65536), pause)
                    break
                except TimeoutError:
                    pass
        else:
            writer.write(request)
            await writer.drain()
        answer += await asyncio.wait_for(reader.read(), 120)
    except TimeoutError:  # an OSError too: caught first
        answer = b"TIMEOUT"
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    wait = time.perf_counter() - t0
    if answer == b"TIMEOUT":
        return "no answer in 120 s", wait
    return (answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"), wait


async def idle_connections(port: int, n: int, hold: float) -> list[tuple[str, float]]:
    """``n`` connections that send nothing; when the server closed each (or ``hold``)."""

    async def one() -> tuple[str, float]:
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            data = await asyncio.wait_for(reader.read(), hold)
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except TimeoutError:
            status = f"open after {hold:g} s"
        except (ConnectionError, OSError):
            status = "closed"
        writer.close()
        return status, time.perf_counter() - t0

    return await asyncio.gather(*(one() for _ in range(n)))


# The /healthz poller, a separate process with the standard library only, so that the
# attacking clients here (and this process's GIL) do not delay its polls. Lines on stdin:
# "start" (clear and poll), "stop" (answer one JSON line: latencies in ms, failed polls).
PROBER = r"""
import json, re, socket, sys, threading, time
host, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
REQUEST = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
state = {"latencies": [], "failed": 0}
probing = threading.Event()

def get(sock):
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head.startswith(b"HTTP/1.1 200"), b"connection: close" in head.lower()

def poll():
    sock = None
    while True:
        probing.wait()
        t0 = time.perf_counter()
        try:
            sock = sock or socket.create_connection((host, port), timeout=30)
            ok, closing = get(sock)
        except OSError:
            ok, closing = False, True
        ms = 1000 * (time.perf_counter() - t0)
        if closing and sock is not None:
            sock.close()
            sock = None
        if ok:
            state["latencies"].append(ms)
        else:
            state["failed"] += 1
        time.sleep(max(0.0, every - ms / 1000))

threading.Thread(target=poll, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "start":
        state = {"latencies": [], "failed": 0}
        probing.set()
    else:
        probing.clear()
        time.sleep(3 * every)
        print(json.dumps(state), flush=True)
"""


class Prober:
    """GET /healthz every ``every`` seconds from another process, between ``start`` and
    ``stop`` (which returns the latencies in ms of the 200s and the count of the rest)."""

    def __init__(self, port: int, every: float = 0.02) -> None:
        cmd = [sys.executable, "-c", PROBER, HOST, str(port), str(every)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> None:
        self.proc.stdin.write("start\n")
        self.proc.stdin.flush()

    def stop(self) -> tuple[list[float], int]:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        state = json.loads(self.proc.stdout.readline())
        return state["latencies"], state["failed"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


class RssSampler(threading.Thread):
    """The peak RSS of process ``pid``, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.process, self.every = psutil.Process(pid), every
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.stop.wait(self.every)


def cases(timeout: float) -> list[tuple[str, Callable[[int], Awaitable[list[tuple[str, float]]]]]]:
    """(name, attack) of each case; an attack takes the port and returns (status, seconds)
    of each of its requests or connections."""
    bomb = png_of_zeros(13000, 13000)
    at_cap = png_of_zeros(4096, 4096)
    over_pillow = png_of_zeros(20000, 20000)
    truncated = png_of_zeros(2048, 2048)[:1500]
    one = small_png()
    huge_json = b'{"images": [' + b",".join([b'"AAAA"'] * 2_000_000) + b"]}"
    deep_json = b"[" * 100_000 + b"]" * 100_000
    too_many = multipart([one] * 65)
    slow_header = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n" + b"x-pad: 0\r\n" * 200
    slow_body = raw_request(
        json.dumps({"images": [base64.b64encode(one).decode()] * 40}).encode(), "application/json"
    )
    body_starts = slow_body.index(b"\r\n\r\n") + 4

    def send(body_type: tuple[bytes, str], n: int = 1, length: int | None = None):
        request = raw_request(*body_type, length)

        async def attack(port: int) -> list[tuple[str, float]]:
            return await asyncio.gather(*(exchange(port, request) for _ in range(n)))

        return attack

    def trickle(request: bytes, n: int, at_once: int = 0):
        async def attack(port: int) -> list[tuple[str, float]]:
            return await asyncio.gather(
                *(exchange(port, request, pause=0.5, chunk=1, at_once=at_once) for _ in range(n))
            )

        return attack

    async def connection_flood(port: int) -> list[tuple[str, float]]:
        return await idle_connections(port, 150, timeout + 5)

    async def nothing(port: int) -> list[tuple[str, float]]:
        await asyncio.sleep(3)
        return []

    return [
        ("idle (no attack)", nothing),
        ("pixel bomb: 13000x13000 PNG (164 KB), 1 request", send(multipart([bomb]))),
        ("pixel bomb: 4 requests x 4 images", send(multipart([bomb] * 4), 4)),
        ("PNG over Pillow's limit: 20000x20000", send(multipart([over_pillow]))),
        ("at the cap: 4 requests x 4 images of 4096x4096", send(multipart([at_cap] * 4), 4)),
        ("truncated PNG (2048x2048, cut at 1.5 KB)", send(multipart([truncated]))),
        ("huge JSON: 2,000,000 base64 entries (14 MB)", send((huge_json, "application/json"))),
        ("deep JSON: nested 100,000 deep", send((deep_json, "application/json"))),
        ("too many images: 65 in one request", send(too_many)),
        ("content-length of 1 GB (no body sent)", send((b"", "application/json"), length=2**30)),
        ("slow headers: 8 clients, 1 byte / 0.5 s", trickle(slow_header, 8)),
        ("slow bodies: 8 clients, 1 byte / 0.5 s", trickle(slow_body, 8, body_starts)),
        ("150 idle connections (max-connections 128)", connection_flood),
    ]


def run(model_dir: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        # -v: the one log line per request, whose statuses the 5xx count reads
        proc, url = start_server(model_dir, "-v", "--request-timeout", f"{timeout:g}", log_path=log_path)
        port = int(url.rsplit(":", 1)[1])
        try:
            with httpx.Client(base_url=url, timeout=30) as c:  # warm: the first requests' allocations
                for _ in range(20):
                    c.post("/v1/predict", files=[("files", ("x.png", small_png(), "image/png"))])
            time.sleep(1)
            server = psutil.Process(proc.pid)
            idle = server.memory_info().rss
            rows = []
            prober = Prober(port)
            for name, attack in cases(timeout):
                sampler = RssSampler(proc.pid)
                sampler.start()
                prober.start()
                time.sleep(0.5)
                t0 = time.perf_counter()
                outcomes = asyncio.run(attack(port))
                seconds = time.perf_counter() - t0
                time.sleep(1.0)
                latencies, failed = prober.stop()
                time.sleep(1.0)
                sampler.stop.set()
                sampler.join()
                lat = np.array(latencies)
                row = {
                    "case": name,
                    "statuses": dict(Counter(s for s, _ in outcomes)),
                    "longest_wait_s": max((w for _, w in outcomes), default=0.0),
                    "attack_s": seconds,
                    "peak_rss_mb": sampler.peak / 2**20,
                    "final_rss_mb": server.memory_info().rss / 2**20,
                    "healthz_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                    "healthz_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                    "healthz_max_ms": float(lat.max()) if len(lat) else float("nan"),
                    "healthz_polls": len(lat) + failed,
                    "healthz_failed": failed,
                }
                rows.append(row)
                print(render_row(row, idle / 2**20), flush=True)
            prober.close()
        finally:
            stop_server(proc)
        server_log = log_path.read_text()
    return {
        "cpu": machine_info()["cpu"],
        "cores": usable_cores(),
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "request_timeout_s": timeout,
        "max_pixels": ServeOptions().max_pixels,
        "max_connections": ServeOptions().max_connections,
        "idle_rss_mb": idle / 2**20,
        "cases": rows,
        "server_5xx": sum(server_log.count(f" 50{d} ") for d in range(10)),
        "server_tracebacks": server_log.count("Traceback"),
    }


def render_row(row: dict, idle_mb: float) -> str:
    statuses = ", ".join(f"{k} x{v}" for k, v in sorted(row["statuses"].items())) or "-"
    failed = f" ({row['healthz_failed']} of {row['healthz_polls']} failed)" if row["healthz_failed"] else ""
    return (
        f"| {row['case']} | {statuses} | {row['longest_wait_s']:.2f} | {row['peak_rss_mb']:.0f} "
        f"({row['peak_rss_mb'] / idle_mb:.2f}x) | {row['final_rss_mb']:.0f} | "
        f"{row['healthz_p50_ms']:.1f} / {row['healthz_p99_ms']:.1f} / {row['healthz_max_ms']:.0f}{failed} |"
    )


def render(r: dict) -> str:
    lines = [
        f"# osrkit serve under hostile input ({r['cpu']}, {r['cores']} cores; "
        f"load average at the end {r['load_average_at_end']})",
        "",
        f"Defaults: max-pixels {r['max_pixels']:,}, max-connections {r['max_connections']}; "
        f"request timeout {r['request_timeout_s']:g} s. Idle RSS of the server process: "
        f"{r['idle_rss_mb']:.0f} MB (the scoring worker is another process).",
        "",
        "| case | statuses | longest wait (s) | peak RSS MB (x idle) | final RSS MB "
        "| /healthz p50 / p99 / max ms |",
        "|---|---|---|---|---|---|",
        *(render_row(row, r["idle_rss_mb"]) for row in r["cases"]),
        "",
        f"Server log: {r['server_5xx']} responses 5xx, {r['server_tracebacks']} tracebacks.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: a digit model trained here, 2 epochs)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--request-timeout", type=float, default=ServeOptions().request_timeout_s)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or _small_model(Path(tmp), None)
        r = run(model_dir, args.request_timeout)
    r["model"] = args.model or "digits, 6,000 MNIST images, 2 epochs"
    out = Path(args.out)
    atomic_write_json(out / "serve_hostile.json", r)
    atomic_write_text(out / "serve_hostile.md", render(r))
    print(render(r))
    print(f"wrote {out / 'serve_hostile.json'} and serve_hostile.md")


if __name__ == "__main__":
    main()
