"""The pretrained backbone's speed on this CPU, for ``osrkit perf speed``: forward and
training throughput of ``efficientnet_lite0`` at its working resolution, each path's
achieved GFLOP/s as a fraction of this machine's matrix rate in the dtype it computes in,
all measured in one run, variants interleaved.

Forward paths: the float32 reference (``FastPaths.off()``), PyTorch's fast paths (folded
batch norm, channels-last, bfloat16 where native) and ONNX Runtime (float32). Training:
one optimizer step of the fine-tuning recipe with every block trained, and with the
registered number of leading blocks frozen.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from osrkit.data.spec import InputSpec
from osrkit.hardware import autocast, native_bf16
from osrkit.models import create_backbone
from osrkit.models.pretrained import EfficientNetLite
from osrkit.recognizer.engine import FastPaths, InferenceEngine
from osrkit.training.config import TrainConfig
from osrkit.training.loop import classifier_loss, make_optimizer

NAME = "efficientnet_lite0"
SPEC = InputSpec(3, 32, 32)  # CIFAR-10's photos, resized inside the network


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def training_flops(net: EfficientNetLite, shape: tuple[int, ...]) -> int:
    """FLOPs of one training image: the forward pass, plus twice the forward FLOPs of the
    trained layers for the backward pass (gradients of inputs and of weights). Counted
    from forward passes because ``torch.utils.flop_counter`` counts a grouped
    convolution's backward as if it were dense (32x too much for a 32-channel depthwise
    one), and EfficientNet is made of them."""
    x = net.resized(net.normalized(torch.zeros(1, *shape)))
    n = net.net
    total = _flops(lambda: n._avg_pooling(n.extract_features(x)))
    frozen = 0
    if net.freeze:
        frozen = _flops(
            lambda: torch.nn.Sequential(n._conv_stem, n._bn0, n._swish, *n._blocks[: net.freeze])(x)
        )
    return total + 2 * (total - frozen)


def _rate(fn: Callable[[], object], images: int, repeats: int) -> float:
    fn()  # warm-up: allocations, oneDNN primitives
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def pretrained_speed(mm_fp32: float, mm_bf16: float, batch: int = 64, repeats: int = 3) -> dict:
    """Forward and training images/s of ``efficientnet_lite0`` on ``SPEC`` inputs, with
    each path's GFLOP/s over ``mm_fp32``/``mm_bf16`` (this machine's ``torch.mm`` rates)."""
    torch.manual_seed(0)
    x = torch.rand(batch, *SPEC.shape)
    y = torch.randint(0, 6, (batch,))
    net = create_backbone(NAME, SPEC, 6).eval()
    one = torch.zeros(1, *SPEC.shape)
    flip = 2 if net.flip_tta else 1  # eval runs the image and its mirror image
    fwd_flops = _flops(lambda: net.forward_features(one)) // flip
    bf16 = native_bf16()
    r: dict = {
        "backbone": NAME,
        "resolution": net.resolution,
        "batch": batch,
        "forward_gflop_per_image": fwd_flops / 1e9,
        "forward": {},
        "training": {},
    }
    net.flip_tta = False  # one pass per image: the rates below are per forward
    paths = {
        "reference": FastPaths.off(),
        "torch fast": FastPaths(onnxruntime=False),
        "onnxruntime": FastPaths(),
    }
    engines = {label: InferenceEngine(net, None, p, input_shape=SPEC.shape) for label, p in paths.items()}
    runs: dict[str, list[float]] = {label: [] for label in engines}
    for _ in range(repeats):
        for label, engine in engines.items():
            runs[label].append(_rate(lambda e=engine: e(x, reconstruct=False), batch, 1))
    for label, engine in engines.items():
        rate = statistics.median(runs[label])
        dtype = "bfloat16" if engine.fast.bf16 else "float32"
        gflops = rate * fwd_flops / 1e9
        r["forward"][label] = {
            "img_s": rate,
            "dtype": dtype,
            "uses_onnxruntime": engine.ort is not None,
            "gflops": gflops,
            "mm_fraction": gflops / (mm_bf16 if dtype == "bfloat16" else mm_fp32),
        }
    for freeze in sorted({0, net.freeze}):
        model = create_backbone(NAME, SPEC, 6, freeze=freeze).train().to(memory_format=torch.channels_last)
        cfg = TrainConfig.for_backbone(NAME)
        opt, _ = make_optimizer(model, cfg.lr, 100, cfg, cfg.optimizer)
        xc = x.contiguous(memory_format=torch.channels_last)

        def step(model=model, opt=opt, xc=xc) -> None:
            with autocast(bf16):
                loss = classifier_loss(model, xc, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        flops = training_flops(model, SPEC.shape)
        rate = _rate(step, batch, repeats)
        gflops = rate * flops / 1e9
        r["training"][f"freeze {freeze}"] = {
            "img_s": rate,
            "dtype": "bfloat16" if bf16 else "float32",
            "gflop_per_image": flops / 1e9,
            "gflops": gflops,
            "mm_fraction": gflops / (mm_bf16 if bf16 else mm_fp32),
        }
    return r


def render_pretrained(r: dict) -> list[str]:
    """Markdown rows for ``speed.md``."""
    lines = [
        "",
        f"## {r['backbone']} at {r['resolution']} px (batch {r['batch']}, "
        f"{r['forward_gflop_per_image']:.3f} GFLOP a forward)",
        "",
        "| path | img/s | dtype | GFLOP/s | of the matrix rate in that dtype |",
        "|---|---:|---|---:|---:|",
    ]
    rows = [(f"forward, {k}", v) for k, v in r["forward"].items()]
    rows += [(f"training step, {k}", v) for k, v in r["training"].items()]
    for label, v in rows:
        lines.append(
            f"| {label} | {v['img_s']:.1f} | {v['dtype']} | {v['gflops']:.1f} | {v['mm_fraction']:.1%} |"
        )
    return lines
