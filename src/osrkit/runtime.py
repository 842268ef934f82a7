"""How the networks run on a CPU: the fast-path switches and the inference engine.

Every fast path here was kept because ``osrkit bench speed`` measured a gain with
metrics unchanged (see BENCHMARKS.md); each can be turned off, all of them at once with
``FastPaths.off()``, ``--no-fast`` on the command line or ``OSRKIT_FAST=0``.
"""

from __future__ import annotations

import copy
import functools
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch
from threadpoolctl import ThreadpoolController
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ConfigError
from .models import Classifier, ConvAutoencoder


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager:
    """numpy's BLAS (OpenBLAS) limited to one thread, for the scorers' small matrix
    products. Left at its default, its idle threads spin beside torch's OpenMP threads
    on the same cores and slowed scoring 4.7x on 2 cores (measured by a profile of
    ``score_and_decide`` at batch 64); threadpoolctl comes with scikit-learn."""
    return _blas().limit(limits=1, user_api="blas")


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


def fast_by_default() -> bool:
    """False when the environment variable ``OSRKIT_FAST`` is ``0``, ``false`` or ``off``."""
    return os.environ.get("OSRKIT_FAST", "1").strip().lower() not in {"0", "false", "off", "no"}


@dataclass(frozen=True)
class FastPaths:
    """Inference fast paths.

    channels_last: NHWC tensors, which oneDNN's convolutions prefer.
    fold_batchnorm: batch norm folded into the preceding convolution's weights.
    bf16: bfloat16 weights and activations in both networks (the class head stays
        float32); ``None`` means "where the CPU has native support". Logits, features and
        reconstruction errors are returned in float32.
    sub_batch: large batches run in slices of this many images, which stay in the CPU's
        caches between layers (``None``: the whole batch at once).
    """

    channels_last: bool = True
    fold_batchnorm: bool = True
    bf16: bool | None = None
    sub_batch: int | None = 256

    def __post_init__(self) -> None:
        if self.sub_batch is not None and (not isinstance(self.sub_batch, int) or self.sub_batch <= 0):
            raise ConfigError(f"sub_batch must be a positive integer or None, got {self.sub_batch!r}")

    @classmethod
    def off(cls) -> FastPaths:
        """The plain float32 reference path."""
        return cls(channels_last=False, fold_batchnorm=False, bf16=False, sub_batch=None)

    @classmethod
    def default(cls) -> FastPaths:
        """All fast paths, unless ``OSRKIT_FAST=0``."""
        return cls() if fast_by_default() else cls.off()

    @property
    def use_bf16(self) -> bool:
        return native_bf16() if self.bf16 is None else self.bf16

    def resolved(self) -> FastPaths:
        """A copy with ``bf16`` decided for this CPU."""
        return replace(self, bf16=self.use_bf16)

    def describe(self) -> str:
        on = [name for name in ("channels_last", "fold_batchnorm") if getattr(self, name)]
        if self.use_bf16:
            on.append("bf16")
        if self.sub_batch:
            on.append(f"sub_batch {self.sub_batch}")
        return "+".join(on) or "off"


def autocast(enabled: bool) -> AbstractContextManager:
    """bfloat16 autocast on the CPU when ``enabled``."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else nullcontext()


def fold_batchnorm(body: nn.Sequential) -> nn.Sequential:
    """A copy of ``body`` with each Conv2d + BatchNorm2d pair (eval mode) merged into one
    Conv2d. Same outputs up to float rounding, one pass over memory less per layer."""
    layers, out = list(body), []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(copy.deepcopy(layer).eval(), copy.deepcopy(nxt).eval()))
            i += 2
        else:
            out.append(copy.deepcopy(layer))
            i += 1
    return nn.Sequential(*out)


class InferenceEngine:
    """Runs the classifier and autoencoder together, with the chosen fast paths.

    Built from trained networks (copied, so later changes to them need a new engine).
    """

    def __init__(self, classifier: Classifier, autoencoder: ConvAutoencoder, fast: FastPaths) -> None:
        self.fast = fast.resolved()
        body = fold_batchnorm(classifier.body) if fast.fold_batchnorm else copy.deepcopy(classifier.body)
        self.memory_format = torch.channels_last if fast.channels_last else torch.contiguous_format
        # bfloat16 weights are cast once here, not on every call as autocast would.
        self.dtype = torch.bfloat16 if self.fast.bf16 else torch.float32
        self.body = body.eval().to(self.dtype, memory_format=self.memory_format)
        self.head = copy.deepcopy(classifier.head).eval()
        self.autoencoder = copy.deepcopy(autoencoder).eval().to(self.dtype, memory_format=self.memory_format)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(B, K)``, features ``(B, D)`` and reconstruction errors ``(B,)`` of a
        float batch ``(B, 1, 28, 28)``, all float32."""
        size = self.fast.sub_batch
        if size and len(x) > size:
            parts = [self._run(chunk) for chunk in x.split(size)]
            return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]
        return self._run(x)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=self.memory_format)
        xc = x.to(self.dtype)
        features = self.body(xc).float()
        recon = self.autoencoder(xc)
        logits = self.head(features)
        err = (recon.float() - x).pow(2).flatten(1).mean(1)
        return logits, features, err
