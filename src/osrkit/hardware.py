"""The machine osrkit runs on: devices, CPU cores, bfloat16 support, thread pools, the
launch environment, and the measured matrix rate that speeds are reported against."""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from threadpoolctl import ThreadpoolController

from osrkit.errors import ConfigError


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager:
    """numpy's BLAS (OpenBLAS) limited to one thread, for the scorers' small matrix
    products: left at its default, its idle threads spin beside torch's OpenMP threads on
    the same cores and slow scoring several times over (BENCHMARKS.md). threadpoolctl
    comes with scikit-learn."""
    return _blas().limit(limits=1, user_api="blas")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers and taskset set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16).

    Elsewhere oneDNN emulates bfloat16, which is slower than float32, so it stays off.
    """
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch without these probes
        return False


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA, else Apple's MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``, checked: asking for a device this machine lacks gets one line."""
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not has_mps:
        raise ConfigError(
            f"device {device!r} asked for, but Apple's MPS is not available here; use --device cpu"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 is fast on ``device``: native on this CPU, or a CUDA GPU with
    bfloat16 support (Ampere and later)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and native_bf16()


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """A bfloat16 switch (True, False, or None = "where ``device`` has fast bfloat16")
    decided for ``device``; training (``TrainConfig.bf16``) and inference (``FastPaths.bf16``)
    both resolve theirs here."""
    return bf16_supported(device) if setting is None else bool(setting)


def fast_by_default() -> bool:
    """False when the environment variable ``OSRKIT_FAST`` is ``0``, ``false`` or ``off``."""
    return os.environ.get("OSRKIT_FAST", "1").strip().lower() not in {"0", "false", "off", "no"}


def autocast(enabled: bool, device_type: str = "cpu") -> AbstractContextManager:
    """bfloat16 autocast on ``device_type`` when ``enabled``."""
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else nullcontext()


def launched() -> bool:
    """Whether this process was started by torchrun as one of several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def local_world_size() -> int:
    """How many ranks torchrun started on this machine (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def mm_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Measured rate of a large square ``torch.mm`` (GFLOP/s, 2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(elapsed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def machine_info() -> dict:
    """The CPU's name, core count, torch's threads and version, native bfloat16 and ISA."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "native_bf16": native_bf16(),
        "isa": torch.backends.cpu.get_cpu_capability(),
    }


def elapsed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
