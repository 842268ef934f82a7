"""The standard open-set benchmark protocols, one call each (``osrkit protocol NAME``):
on digits ``seed``, ``mnist-splits``, ``crosr`` and ``near-far``; in colour
``cifar10-splits``, ``cifar10-far`` and ``cifar10-train-speed``.

Each protocol trains (or reuses from its cache) a recognizer on known classes only,
scores its unknown sets with every scorer, and writes ``DIR/<name>.json`` and
``DIR/<name>.md``: the tables, the published numbers beside ours, and one line per
target, ``target <name>: <measured> (goal <goal>) ok|short``. Thresholds come from the
known validation split (95% accepted); nothing is chosen by looking at unknown data.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import numpy as np

from osrkit._deprecation import renamed
from osrkit._version import __version__
from osrkit.errors import ConfigError, DataError
from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.protocols.cifar import (
    CIFAR10_SPLITS,
    run_cifar10_far,
    run_cifar10_splits,
    run_cifar10_train_speed,
)
from osrkit.protocols.context import Context, cache_key
from osrkit.protocols.mnist import (
    MNIST_SPLITS,
    run_crosr,
    run_digits_baseline,
    run_mnist_splits,
    run_near_far,
)
from osrkit.protocols.registry import (
    PROTOCOLS,
    RUN_ORDER,
    ProtocolEntry,
    group_names,
    list_protocols,
    protocol_entry,
    register_protocol,
)
from osrkit.protocols.render import render
from osrkit.protocols.unknowns import NOISE_IMAGES, gaussian_noise, mnist_noise, split_classes, uniform_noise

log = logging.getLogger(__name__)

__getattr__ = renamed(__name__, {"run_seed": "run_digits_baseline"})

__all__ = [
    "CIFAR10_SPLITS",
    "MNIST_SPLITS",
    "NOISE_IMAGES",
    "PROTOCOLS",
    "RUN_ORDER",
    "Context",
    "ProtocolEntry",
    "cache_key",
    "create_protocol",
    "gaussian_noise",
    "group_names",
    "list_protocols",
    "mnist_noise",
    "protocol_entry",
    "register_protocol",
    "render",
    "run_cifar10_far",
    "run_cifar10_splits",
    "run_cifar10_train_speed",
    "run_crosr",
    "run_digits_baseline",
    "run_mnist_splits",
    "run_near_far",
    "run_protocol",
    "split_classes",
    "uniform_noise",
]


def create_protocol(name: str) -> Callable[[Context], dict]:
    """The registered protocol ``name``, ready to run: ``create_protocol(name)(ctx)`` is
    ``run_protocol(name, ctx)``. An unknown name is one line naming the registered ones."""
    protocol_entry(name)
    return functools.partial(run_protocol, name)


def run_protocol(name: str, ctx: Context) -> dict:
    """Run one protocol and write ``<out>/<name>.json`` and ``<out>/<name>.md``."""
    if name not in PROTOCOLS:
        names = ", ".join(group_names()["all"])
        raise ConfigError(f"unknown benchmark {name!r}; choose from {names} or a group")
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx.trained.clear()
    try:
        result = PROTOCOLS[name].run(ctx)
    except FileNotFoundError as exc:  # pragma: no cover - readers raise DataError themselves
        raise DataError(f"{exc}") from None
    result |= {
        "training": training_compute(ctx.trained, ctx.config.use_bf16, ctx.matrix_rate(ctx.config.use_bf16)),
        "protocol": name,
        "wall_s": time.perf_counter() - t0,
        "accept_rate": 0.95,
        "config": ctx.config.to_dict(),
        "subsampled": {"train": ctx.max_train, "test": ctx.max_test},
        "osrkit": __version__,
    }
    atomic_write_json(ctx.out / f"{name}.json", _jsonable(result))
    atomic_write_text(ctx.out / f"{name}.md", render(name, result))
    return result


def training_compute(models: list[dict], bf16: bool, rate: float) -> dict:
    """The protocol's training compute: each model's (``Context.trained``), their sum, and
    the FLOP-bound time at ``rate``, this machine's ``torch.mm`` GFLOP/s in the training
    dtype (``Context.matrix_rate``)."""
    pflop = sum(m["pflop"] or 0.0 for m in models)
    seconds = [m["train_s"] for m in models if not m["from_cache"]]
    return {
        "models": models,
        "pflop": pflop,
        "dtype": "bfloat16" if bf16 else "float32",
        "mm_gflops": rate,
        "flop_bound_s": pflop * 1e15 / (rate * 1e9),
        "train_s_here": sum(s or 0.0 for s in seconds),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
