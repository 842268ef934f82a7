"""Distributed training and lazily read folders, measured on this machine.

``equivalence``: ``osrkit run`` on an MNIST subset, once in 1 process and once as 2 gloo
ranks (``torchrun --nproc-per-node 2``), same data and seed: closed-set accuracy, the
decision scorer's AUROC, training throughput, and how alike the two model folders predict.

``scaling``: an ESTIMATE on paper of data-parallel throughput, from the per-step compute
measured here (forward + backward + step of one per-rank batch) and the all-reduce
volume (parameters x 4 bytes per step, ring all-reduce); see ``estimate``.

``memory``: a synthetic image folder of N 64x64 colour PNGs (generated into a temporary
folder), trained for one epoch from the lazy source in a fresh process: peak RSS of the
training process and of its DataLoader workers, and images/s.

    python benchmarks/distributed.py equivalence [--max-train 8000] [--val-size 1000] [--epochs 2]
    python benchmarks/distributed.py scaling
    python benchmarks/distributed.py memory [--sizes 10000 50000 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict:
    return os.environ | {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _write(name: str, result: dict, text: str) -> None:
    from osrkit.files.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(RESULTS / f"{name}.json", result)
    atomic_write_text(RESULTS / f"{name}.md", text)
    print(text)


def _machine() -> dict:
    return {
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),  # other jobs share these cores
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- equivalence
def equivalence(args: argparse.Namespace) -> None:
    import torch

    from osrkit import OpenSetRecognizer, load_dataset
    from osrkit.perf.serve_load import free_port

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="osrkit-ddp-"))
    common = ["--train", "mnist:train", "--max-train", str(args.max_train), "--epochs", str(args.epochs)]
    common += ["--val-size", str(args.val_size)]
    common += ["--max-known", "2000", "--max-unknown", "2000", "--unknown", "fashion-mnist:test"]
    common += ["--no-autoencoder", "--device", "cpu", "--seed", "0", "-q", "--embed-samples", "200"]
    launch = {
        "1 process": [sys.executable, "-m", "osrkit"],
        "2 processes (gloo)": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "osrkit",
        ],
    }
    runs = {}
    for label, prefix in launch.items():
        out = work / label.split()[0]
        cmd = [*prefix, "run", "--out", str(out), *common]
        wall = None  # a run already in --work (from an earlier call) is not timed again
        if not (out / "metrics.json").is_file():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
            wall = round(time.perf_counter() - t0, 1)
        m = json.loads((out / "metrics.json").read_text())
        decision = m.get("decision_scorer", "max_logit")
        images = m["training"]["train_size"] * args.epochs  # patience 3 > epochs: every epoch runs
        runs[label] = {
            "command": " ".join(["python" if p == sys.executable else p for p in cmd]),
            "closed_set_accuracy": m["closed_set_accuracy"],
            "decision_scorer": decision,
            "decision_auroc": m["scorers"][decision]["auroc"],
            "train_s": m["timing_s"]["train"],
            "train_images_per_s": round(images / m["timing_s"]["train"], 1),
            "wall_s": wall,
            "processes": m["training"].get("processes", 1),
        }
    one, two = (OpenSetRecognizer.from_pretrained(work / k / "model", device="cpu") for k in ("1", "2"))
    known = load_dataset("mnist:test").take(2000, seed=0)
    unknown = load_dataset("fashion-mnist:test").take(2000, seed=0)
    images = torch.cat([known.images, unknown.images])
    p1, p2 = one.predict(images), two.predict(images)
    s1, s2 = (m.score_samples(images) for m in (one, two))
    a, b = runs.values()
    result = {
        "machine": _machine(),
        "data": f"MNIST train subset of {args.max_train} (seed 0; {args.val_size} of them for validation), "
        f"{args.epochs} epochs, no autoencoder; "
        "test: 2000 MNIST test (known) + 2000 Fashion-MNIST test (unknown)",
        "runs": runs,
        "accuracy_gap": round(abs(a["closed_set_accuracy"] - b["closed_set_accuracy"]), 4),
        "auroc_gap": round(abs(a["decision_auroc"] - b["decision_auroc"]), 4),
        "prediction_agreement": float((np.asarray(p1) == np.asarray(p2)).mean()),
        "decision_score_rank_correlation": float(np.corrcoef(_ranks(s1), _ranks(s2))[0, 1]),
    }
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# 1 process against 2 gloo processes\n",
        f"{result['data']}; {os.cpu_count()} CPU cores.\n",
        "| run | closed-set accuracy | decision AUROC | training images/s | train s | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in runs.items():
        lines.append(
            f"| {label} | {r['closed_set_accuracy']:.4f} | {r['decision_auroc']:.4f} "
            f"({r['decision_scorer']}) | {r['train_images_per_s']} | {r['train_s']} | {r['wall_s']} |"
        )
    lines += [
        "",
        f"Gaps: accuracy {result['accuracy_gap']}, AUROC {result['auroc_gap']}. The two model folders "
        f"give the same label (class or unknown) to {result['prediction_agreement']:.2%} of the 4000 test "
        f"images; rank correlation of their decision scores {result['decision_score_rank_correlation']:.4f}.",
        "",
        "Commands:",
        "",
        *[f"    {r['command']}" for r in runs.values()],
        "",
    ]
    _write("distributed-equivalence", result, "\n".join(lines))


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(np.float64)


# ---------------------------------------------------------------- scaling (estimate)
INTRA_NODE_GBPS = {"PCIe 4.0 x16 (~25 GB/s)": 25 * 8, "NVLink 3 (~300 GB/s)": 300 * 8}
NETWORKS_GBIT = (10, 100)
GPU_SPEEDUP = 50  # assumed: a data-centre GPU's per-step compute vs these CPU cores (NOT measured)


def estimate(step_s: float, batch: int, params: int, ranks: int, gbit_per_s: float) -> dict:
    """Images/s of ``ranks`` data-parallel ranks, each computing a batch of ``batch``
    in ``step_s`` and ring-all-reducing ``params`` float32 gradients over a link of
    ``gbit_per_s``: ``comm_s = 2 (N - 1) / N * params * 4 bytes / bandwidth``, and
    ``images/s = N * batch / (step_s + comm_s)`` (no overlap of communication with the
    backward pass: DDP overlaps them, so the truth lies between this and
    ``N * batch / max(step_s, comm_s)``)."""
    comm = 0.0 if ranks == 1 else 2 * (ranks - 1) / ranks * params * 4 / (gbit_per_s * 1e9 / 8)
    return {"comm_s": comm, "images_per_s": ranks * batch / (step_s + comm), "comm_dominates": comm > step_s}


def _step_time(name: str, batch: int, repeats: int = 5) -> tuple[float, int, str]:
    import torch
    import torch.nn.functional as F

    from osrkit.data.spec import InputSpec
    from osrkit.models import create_backbone

    spec = InputSpec(1, 28, 28) if name == "small_cnn" else InputSpec(3, 32, 32)
    torch.set_num_threads(1)  # one core per rank; other jobs share this machine's cores
    torch.manual_seed(0)
    model = create_backbone(name, spec, 10).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(batch, *spec.shape), torch.randint(0, 10, (batch,))
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return float(np.median(times)), params, spec.describe()


def scaling(args: argparse.Namespace) -> None:
    batch = 128
    rows, result = [], {"machine": _machine(), "per_rank_batch": batch, "backbones": {}}
    for name in args.backbones:
        step, params, spec = _step_time(name, batch)
        entry = {"input": spec, "params": params, "allreduce_mb": params * 4 / 1e6, "cpu_step_s": step}
        for compute, speed in (("measured CPU", 1), (f"GPU, assumed {GPU_SPEEDUP}x faster", GPU_SPEEDUP)):
            s = step / speed
            for link, gbps in INTRA_NODE_GBPS.items():
                for n in (1, 2, 4, 8):
                    e = estimate(s, batch, params, n, gbps)
                    rows.append((name, compute, f"1 node, {link}", n, e))
            for gbit in NETWORKS_GBIT:
                e = estimate(s, batch, params, 16, gbit)
                rows.append((name, compute, f"2 nodes x 8, {gbit} Gbit/s", 16, e))
        result["backbones"][name] = entry
    result["estimates"] = [
        {"backbone": b, "compute": c, "link": link, "ranks": n} | e for b, c, link, n, e in rows
    ]
    lines = [
        "# Data-parallel throughput: an ESTIMATE on paper, not a measurement\n",
        "Per-rank batch 128. Measured here: the per-step compute (forward, backward and AdamW step of one "
        "batch on one CPU core of this machine, float32) and the parameter count. Formula: "
        "`comm_s = 2 (N-1)/N x params x 4 B / link bandwidth` (ring all-reduce of float32 gradients), "
        "`images/s = N x 128 / (step_s + comm_s)` (no overlap; DDP overlaps communication with the "
        "backward pass, so real throughput lies between this and `N x 128 / max(step_s, comm_s)`). "
        f"The GPU rows assume a step {GPU_SPEEDUP}x faster than one CPU core here (an assumption, "
        "not measured); "
        "latency per message is ignored. 2 nodes: a ring over 16 ranks limited by the network link.\n",
    ]
    for name, e in result["backbones"].items():
        lines.append(
            f"- {name} ({e['input']}): {e['params']:,} parameters, all-reduce {e['allreduce_mb']:.2f} MB per "
            f"step; measured CPU step {e['cpu_step_s'] * 1000:.1f} ms"
        )
    lines += [
        "",
        "| backbone | compute | link | ranks | comm ms | images/s | comm > compute |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for b, c, link, n, e in rows:
        lines.append(
            f"| {b} | {c} | {link} | {n} | {e['comm_s'] * 1000:.2f} | {e['images_per_s']:,.0f} "
            f"| {'yes' if e['comm_dominates'] else 'no'} |"
        )
    lines += [
        "",
        "Where communication starts to dominate: the per-step compute at which `comm_s = step_s`, "
        "and how many times faster than one CPU core here a rank must compute for that to happen.",
        "",
        "| backbone | link | ranks | comm ms = compute ms | rank speed-up over one CPU core |",
        "|---|---|---:|---:|---:|",
    ]
    links = [(f"1 node, {k}", v, 8) for k, v in INTRA_NODE_GBPS.items()]
    links += [(f"2 nodes x 8, {g} Gbit/s", g, 16) for g in NETWORKS_GBIT]
    result["break_even"] = []
    for name, e in result["backbones"].items():
        for link, gbps, n in links:
            comm = estimate(1.0, 128, e["params"], n, gbps)["comm_s"]
            speedup = e["cpu_step_s"] / comm
            result["break_even"].append({"backbone": name, "link": link, "ranks": n, "comm_s": comm})
            lines.append(f"| {name} | {link} | {n} | {comm * 1000:.2f} | {speedup:,.0f}x |")
    lines += ["", "Command: `python benchmarks/distributed.py scaling`", ""]
    _write("distributed-scaling", result, "\n".join(lines))


# ---------------------------------------------------------------- memory
WIDTHS = {"widths": [16, 32, 64]}  # a quarter of colour_cnn's default widths: CPU minutes


def _train_once(folder: str, out: str) -> None:
    """In a fresh process: one epoch on the lazily read ``folder``; peak RSS to ``out``."""
    import torch

    from osrkit import OpenSetRecognizer, TrainConfig
    from osrkit.data.lazy import open_image_folder

    data = open_image_folder(folder, memory_budget=0)
    model = OpenSetRecognizer(
        data.class_names, device="cpu", autoencoder=False, backbone="colour_cnn", backbone_options=WIDTHS
    )
    cfg = TrainConfig.for_backbone("colour_cnn", epochs=1, val_size=1000, seed=0)
    t0 = time.perf_counter()
    model.fit(data, cfg)
    seconds = time.perf_counter() - t0
    usage = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    Path(out).write_text(
        json.dumps(
            {
                "images": len(data),
                "decoded_gib_if_in_memory": data.nbytes / 2**30,
                "fit_s": seconds,
                "train_images_per_s_incl_calibration": (len(data) - 1000) / seconds,
                "peak_rss_mib": usage[0] / 1024,
                "peak_worker_rss_mib": usage[1] / 1024,
                "torch_threads": torch.get_num_threads(),
                "backbone": model.backbone_name_,
            }
        )
    )


def memory(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="osrkit-lazy-") as tmp:
        made = 0
        root = Path(tmp) / "folder"
        for n in sorted(args.sizes):
            t0 = time.perf_counter()
            make_folder_range(root, made, n)
            made = n
            gen_s = time.perf_counter() - t0
            out = Path(tmp) / f"{n}.json"
            here = str(Path(__file__).parent)
            code = f"import sys; sys.path[:0] = [{here!r}]; import distributed; "
            code += f"distributed._train_once({str(root)!r}, {str(out)!r})"
            subprocess.run([sys.executable, "-c", code], check=True, env=_env())
            results.append(json.loads(out.read_text()) | {"generate_s": round(gen_s, 1)})
            print(results[-1], flush=True)
    result = {"machine": _machine(), "results": results}
    lines = [
        "# Memory against dataset size: the lazy source\n",
        "Synthetic 64x64 colour PNG folders, one epoch of `colour_cnn` with widths 16, 32, 64 (a "
        "quarter of its default; no autoencoder, 1,000 validation "
        "images, default scorers) from `open_image_folder(..., memory_budget=0)`, in a fresh process; "
        "images/s counts the training images over the whole `fit` (training, validation, scorer fitting "
        "and calibration). Peak RSS from `getrusage` (workers: the largest DataLoader worker).\n",
        "| images | decoded size if in memory | peak RSS, training process | peak RSS, a worker | images/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['images']:,} | {r['decoded_gib_if_in_memory']:.2f} GiB | {r['peak_rss_mib']:.0f} MiB "
            f"| {r['peak_worker_rss_mib']:.0f} MiB | {r['train_images_per_s_incl_calibration']:.0f} |"
        )
    sizes = " ".join(str(n) for n in sorted(args.sizes))
    lines += ["", f"Command: `python benchmarks/distributed.py memory --sizes {sizes}`", ""]
    _write("distributed-memory", result, "\n".join(lines))


def make_folder_range(root: Path, start: int, stop: int) -> None:
    """Images ``start..stop`` of the synthetic folder (each size adds to the last)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(60, 256, (10, 3))
    for k in range(10):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        r_ = np.random.default_rng(i)
        k = i % 10
        img = r_.integers(0, 60, (64, 64, 3), dtype=np.uint8)
        r, c = 4 + 14 * (k // 4) + r_.integers(-2, 3), 4 + 14 * (k % 4) + r_.integers(-2, 3)
        img[r : r + 14, c : c + 14] = colours[k]
        Image.fromarray(img, "RGB").save(root / f"c{k}" / f"{i}.png", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("equivalence")
    p.add_argument("--max-train", type=int, default=8000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--work", help="folder for the two runs (kept; runs already there are reused)")
    p = sub.add_parser("scaling")
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "colour_cnn"])
    p = sub.add_parser("memory")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    args = parser.parse_args()
    {"equivalence": equivalence, "scaling": scaling, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
