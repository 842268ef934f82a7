"""``osrkit perf serve``: load on ``osrkit serve`` from a client on loopback.

The server runs in a child process (as it would in production); the client, plain asyncio
streams on keep-alive connections in this process (not httpx: see ``_load``), keeps
``concurrency`` requests of one PNG image each in flight, bounded
by a request count and a time limit per setting. The HTTP floor is the same client
against ``GET /healthz`` of the same server: what the HTTP stack alone does here.
Reported per setting (the default worker process with micro-batching on and off, and a
scoring thread with batching on; concurrency 1, 8, 64): requests/s, images/s, p50 and
p99 latency, errors, and the ratio to in-process ``score_samples`` at the same batch
size, measured in the same run.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from osrkit.data.catalog import load_dataset
from osrkit.data.transforms import chw_to_pil
from osrkit.errors import ConfigError
from osrkit.evaluation.report import target_line
from osrkit.export import OnnxRecognizer, export_onnx
from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.serve.app import ServeOptions, scoring_threads

log = logging.getLogger(__name__)


@dataclass
class ServeBenchOptions:
    """What ``bench serve`` measures."""

    model: str | None = None  # model folder; default: a digit model trained here on 6,000 images
    data_root: str | None = None
    concurrency: tuple[int, ...] = (1, 8, 64)
    requests: int = 2000  # per setting, at most
    seconds: float = 15.0  # per setting, at most


# (backend, worker, micro-batching) of each server the benchmark loads; the first is the default
SERVERS = (
    ("torch", "process", True),
    ("torch", "process", False),
    ("torch", "thread", True),
    ("onnx", "process", True),
)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    chw_to_pil(array).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model_dir: str | os.PathLike,
    *flags: str,
    timeout: float = 120,
    log_path: str | os.PathLike | None = None,
) -> tuple[subprocess.Popen, str]:
    """``osrkit serve model_dir *flags`` in a child process on a free loopback port, once
    ``/readyz`` answers; returns the process and its base URL. Its stderr (the log) is
    piped and read by ``stop_server``, or, for a long or chatty run whose log would fill
    the pipe and block the server, written to ``log_path``."""
    import httpx  # the serve extra's client

    port = free_port()
    cmd = [sys.executable, "-m", "osrkit", "serve", str(model_dir), "--port", str(port), *flags]
    log = open(log_path, "w") if log_path else subprocess.PIPE  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    finally:
        if log_path:
            log.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = Path(log_path).read_text() if log_path else proc.stderr.read()
            raise ConfigError(f"osrkit serve exited: {text.strip().splitlines()[-1:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise ConfigError(f"osrkit serve did not become ready within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """SIGTERM, then wait for a clean exit; returns the exit code and the server's log
    ("" when ``start_server`` wrote it to a file)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise ConfigError(f"osrkit serve did not stop within {timeout:.0f} s of SIGTERM") from None
    return proc.returncode, err or ""


BOUNDARY = "osrkit-perf-serve-boundary"


def predict_request(png: bytes, host: str = "127.0.0.1") -> bytes:
    """The bytes of a keep-alive ``POST /v1/predict`` with one PNG as a multipart file."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /v1/predict HTTP/1.1\r\nhost: {host}\r\n"
        f"content-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def floor_request(host: str = "127.0.0.1") -> bytes:
    """The bytes of a keep-alive ``GET /healthz``: the HTTP stack alone, no model."""
    return f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection, read the whole response; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _load(url: str, payloads: list[bytes], concurrency: int, max_requests: int, seconds: float) -> dict:
    """``concurrency`` keep-alive connections, each sending the prepared requests
    (``payloads``, in turn) until ``max_requests`` were sent or ``seconds`` passed; latencies of the
    successful ones, the error count and this client's CPU share of one core.

    The client is a few lines of asyncio streams rather than httpx: httpx's connection
    pool costs the client many times the CPU per request at high concurrency, so on
    shared cores the client, not the server, would set the pace and the p99
    (BENCHMARKS.md, HTTP service)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors = 0
    sent = 0
    t_end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < max_requests and time.perf_counter() < t_end:
                data = payloads[sent % len(payloads)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, data) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
        finally:
            writer.close()

    # the event loop's thread alone: the client's own CPU, not other threads of this process
    t0, cpu0 = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "wall_s": wall,
        "req_s": len(latencies) / wall,
        "img_s": len(latencies) / wall,  # one image per request
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "client_cpu_share": cpu / wall,
    }


def in_process_img_s(
    score: Callable[[np.ndarray], object], images: np.ndarray, batch: int, seconds: float = 3.0
) -> float:
    """Images/s of ``score`` (``score_samples`` of a model, or an ONNX model's ``run``) at
    ``batch`` (decoded images, no HTTP)."""
    x = images[:batch]
    score(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        score(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def _small_model(folder: Path, data_root: str | None) -> str:
    train = load_dataset("mnist:train", data_root).take(6000, seed=0)
    model = OpenSetRecognizer(train.class_names).fit(train, {"epochs": 2, "ae_epochs": 2, "val_size": 1000})
    return str(model.save_pretrained(folder / "model"))


def serve_load(out_dir: str | os.PathLike, options: ServeBenchOptions = ServeBenchOptions()) -> dict:
    """Run every setting; write ``out_dir/serve.json`` and ``out_dir/serve.md``."""
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise ConfigError("bench serve needs the serve extra: pip install 'osrkit[serve]'") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = options.model or _small_model(Path(tmp), options.data_root)
        model = OpenSetRecognizer.from_pretrained(model_dir)
        test = load_dataset("mnist:test", options.data_root, input_spec=model.input_spec_).take(256, seed=0)
        arrays = test.images.numpy()
        payloads = [predict_request(_png(a)) for a in arrays]
        r: dict = {
            "model": "given" if options.model else "digits, 6,000 MNIST images, 2 epochs",
            "settings": [],
        }
        onnx_path = Path(model_dir) / "model.onnx"
        if not onnx_path.exists():  # the ONNX backend's server needs an export
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx")
        # in-process with the torch threads the server scores with: more threads than free
        # cores leave OpenMP threads spinning, many times slower at batch 1 (BENCHMARKS.md)
        threads, r["torch_threads"] = torch.get_num_threads(), scoring_threads(ServeOptions())
        torch.set_num_threads(r["torch_threads"])
        try:
            onnx = OnnxRecognizer(onnx_path)  # its onnxruntime threads follow torch's
            r["in_process_img_s"] = {
                backend: {str(b): in_process_img_s(score, arrays, b) for b in options.concurrency}
                for backend, score in (("torch", model.score_samples), ("onnx", onnx.run))
            }
        finally:
            torch.set_num_threads(threads)
        # the default server (torch backend, worker process), batching on and off; the same
        # with the scorer on a thread of the server; and the ONNX backend: in one run
        for backend, worker, batching in SERVERS:
            flags = ["-q", "--worker", worker, "--backend", backend, *([] if batching else ["--no-batching"])]
            proc, url = start_server(onnx_path if backend == "onnx" else model_dir, *flags)
            try:
                for c in options.concurrency:
                    if (backend, worker, batching) == SERVERS[0]:  # the HTTP floor, same server
                        floor = asyncio.run(_load(url, [floor_request()], c, 10**9, options.seconds / 3))
                        r.setdefault("floor", {})[str(c)] = floor
                        log.info("floor %s", floor)
                    res = asyncio.run(_load(url, payloads, c, options.requests, options.seconds))
                    res |= {"backend": backend, "worker": worker, "batching": batching, "concurrency": c}
                    res["ratio_to_in_process"] = res["img_s"] / r["in_process_img_s"][backend][str(c)]
                    r["settings"].append(res)
                    log.info("%s", res)
            finally:
                code, err = stop_server(proc)
                if code != 0:
                    raise ConfigError(f"osrkit serve did not shut down cleanly: {err.strip()[-300:]}")
    r["load_average"] = f"{load0} / " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    r["targets"] = targets(r)
    atomic_write_json(out_dir / "serve.json", r)
    atomic_write_text(out_dir / "serve.md", render(r))
    return r


def _key(s: dict) -> tuple:
    """A setting's server (runs before these options: torch on a thread)."""
    return s.get("backend", "torch"), s.get("worker", "thread"), s["batching"]


def _in_process(r: dict, s: dict) -> float:
    ref = r["in_process_img_s"]
    ref = ref.get(s.get("backend", "torch"), ref)  # runs before the ONNX row: torch only
    return ref[str(s["concurrency"])]


def _setting(r: dict, c: int, server: tuple = SERVERS[0]) -> dict | None:
    return next((s for s in r["settings"] if _key(s) == server and s["concurrency"] == c), None)


def targets(r: dict) -> list[str]:
    """The issue's targets on the default server, and the same on the ONNX backend."""
    out = []
    for server, label in ((SERVERS[0], ""), (("onnx", "process", True), " (--backend onnx)")):
        top = _setting(r, 64, server)
        if top is not None:
            out.append(
                target_line(
                    f"serve-c64-batching-fraction-of-batch-64{label}",
                    top["ratio_to_in_process"],
                    0.5,
                    "min",
                    ".2f",
                )
            )
        one = _setting(r, 1, server)
        if one is not None:
            out.append(target_line(f"serve-c1-p99-latency{label}", one["p99_ms"], 10.0, "max", ".2f", " ms"))
    floor, top = r.get("floor", {}).get("64"), _setting(r, 64)
    if floor is not None and top is not None:
        in_process = _in_process(r, top)
        out.append(
            f"HTTP floor at concurrency 64 (GET /healthz, no model): {floor['req_s']:,.0f} req/s = "
            f"{floor['req_s'] / in_process:.2f} of in-process batch-64 img/s"
            + (": the HTTP stack alone is below the 0.5 target" if floor["req_s"] < 0.5 * in_process else "")
        )
    errors = sum(s["errors"] for s in r["settings"])
    out.append(target_line("serve-errors", errors, 0, "max", "d"))
    return out


def render(r: dict) -> str:
    """The Markdown tables and target lines of a serve-load result."""
    lines = [
        "# osrkit perf serve",
        "",
        f"Model: {r['model']}. One PNG image per request, client and server on loopback on the "
        "same machine. Ratio = images/s against the same backend in process at batch = "
        "concurrency (`score_samples`; for ONNX the graph's `run`), with the server's thread count.",
        "",
        "| backend | scoring worker | micro-batching | concurrency | requests | req/s | p50 ms | p99 ms "
        "| errors | in-process img/s | ratio | client CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["settings"]:
        backend, worker, batching = _key(s)
        lines.append(
            f"| {backend} | {worker} | {'on' if batching else 'off'} | {s['concurrency']} | "
            f"{s['requests']} | {s['req_s']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
            f"{s['errors']} | {_in_process(r, s):,.0f} | {s['ratio_to_in_process']:.2f} | "
            f"{s.get('client_cpu_share', float('nan')):.2f} |"
        )
    if r.get("floor"):
        lines += [
            "",
            "HTTP floor: the same client against `GET /healthz` of the default server (the first "
            "rows), "
            "no model, no body: what the HTTP stack alone does on this machine.",
            "",
            "| concurrency | req/s | p50 ms | p99 ms | errors | client CPU | predict req/s / floor |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c, f in r["floor"].items():
            on = _setting(r, int(c))
            share = on["req_s"] / f["req_s"] if on and f["req_s"] else float("nan")
            lines.append(
                f"| {c} | {f['req_s']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['errors']} | "
                f"{f['client_cpu_share']:.2f} | {share:.2f} |"
            )
    if r.get("load_average"):
        lines += ["", f"Load average before/after: {r['load_average']}"]
    lines += ["", *r["targets"]]
    return "\n".join(lines) + "\n"
