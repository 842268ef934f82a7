"""Where the HTTP service's time goes, in process (BENCHMARKS.md, HTTP service):

    python benchmarks/serve_profile.py MODEL_DIR [--onnx MODEL.onnx]

- ``gil``: a batch of 64 digits scored on one thread alone, then beside one busy Python
  thread (the event loop under load), at the default and a short GIL switch interval:
  why the service scores in a worker process.
- ``latency``: one image's prediction rows as the service's worker writes them
  (``json_rows``, 1 torch thread, the service's default on 2 cores), p50 and p99, for the
  torch model and its ONNX export; PNG decoding alone.

Prints a table; run it on idle cores (absolute times on shared machines are noisy).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
import torch

from osrkit.data.catalog import load_dataset
from osrkit.jobs.predictions import input_spec_of, load_model
from osrkit.perf.serve_load import _png
from osrkit.serve.images import decode_batch
from osrkit.serve.worker import json_rows


def percentiles(fn, n: int) -> tuple[float, float]:
    times = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        fn(i)
        times.append(1000 * (time.perf_counter() - t0))
    times = np.array(times[20:])  # warm-up left out
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def gil(model, batch: np.ndarray) -> list[str]:
    rows = []
    for label, interval, busy in (
        ("alone", 0.005, False),
        ("beside a busy Python thread, switch interval 5 ms", 0.005, True),
        ("beside a busy Python thread, switch interval 0.5 ms", 0.0005, True),
    ):
        sys.setswitchinterval(interval)
        stop = threading.Event()

        def spin(stop: threading.Event = stop) -> None:  # pure Python, like a loaded event loop
            while not stop.is_set():
                sum(range(1000))

        spinner = threading.Thread(target=spin)
        if busy:
            spinner.start()
        out: list[float] = []

        def score(out: list[float] = out) -> None:
            torch.set_num_threads(1)
            out.append(percentiles(lambda i: json_rows(model, batch), 10)[0])

        scorer = threading.Thread(target=score)
        scorer.start()
        scorer.join()
        stop.set()
        if busy:
            spinner.join()
        rows.append(f"| batch of 64 on a scoring thread, {label} | {out[0]:.1f} | |")
    sys.setswitchinterval(0.005)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model folder")
    p.add_argument("--onnx", help="its ONNX export (osrkit export MODEL MODEL/model.onnx)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    spec = input_spec_of(model)
    test = load_dataset("mnist:test", args.data_root, input_spec=spec).take(256, seed=0)
    pngs = [_png(a) for a in test.images.numpy()]
    batches = [decode_batch([("x.png", b)], spec) for b in pngs]
    rows = ["| what (1 torch thread) | p50 ms | p99 ms |", "|---|---:|---:|"]
    p50, p99 = percentiles(lambda i: decode_batch([("x.png", pngs[i % 256])], spec), 500)
    rows.append(f"| PNG decode of one image | {p50:.2f} | {p99:.2f} |")
    backends = [("torch", model)] + ([("onnx", load_model(args.onnx, "onnx"))] if args.onnx else [])
    for name, m in backends:
        p50, p99 = percentiles(lambda i, m=m: json_rows(m, batches[i % 256]), 500)
        rows.append(f"| {name}: one image's prediction rows | {p50:.2f} | {p99:.2f} |")
        big = np.concatenate(batches[:64])
        p50, p99 = percentiles(lambda i, m=m, big=big: json_rows(m, big), 40)
        rows.append(f"| {name}: a batch of 64 | {p50:.2f} | {p99:.2f} |")
    rows += gil(model, np.concatenate(batches[:64]))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
