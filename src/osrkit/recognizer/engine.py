"""How the networks run on a CPU: the fast-path switches and the inference engine.

A fast path stays here only where ``osrkit perf speed`` shows it faster with the metrics
unchanged (BENCHMARKS.md); each can be turned off, all of them at once with
``FastPaths.off()``, ``--no-fast`` on the command line or ``OSRKIT_FAST=0``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from osrkit.errors import ConfigError
from osrkit.hardware import fast_by_default, resolve_bf16
from osrkit.models import Backbone, ConvAutoencoder
from osrkit.recognizer.ort_features import onnx_features


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
    onnxruntime: a network that asks for it (``onnx_features = True``: the pretrained
        EfficientNets) computes its features in ONNX Runtime, float32, where onnxruntime
        is installed (``osrkit.recognizer.ort_features``).
    """

    channels_last: bool = True
    fold_batchnorm: bool = True
    bf16: bool | None = None
    sub_batch: int | None = 256
    onnxruntime: bool = True

    def __post_init__(self) -> None:
        if self.sub_batch is not None and (not isinstance(self.sub_batch, int) or self.sub_batch <= 0):
            raise ConfigError(f"sub_batch must be a positive integer or None, got {self.sub_batch!r}")

    @classmethod
    def off(cls) -> FastPaths:
        """The plain float32 reference path."""
        return cls(channels_last=False, fold_batchnorm=False, bf16=False, sub_batch=None, onnxruntime=False)

    @classmethod
    def default(cls) -> FastPaths:
        """All fast paths, unless ``OSRKIT_FAST=0``."""
        return cls() if fast_by_default() else cls.off()

    @property
    def use_bf16(self) -> bool:
        return resolve_bf16(self.bf16, torch.device("cpu"))

    def resolved(self) -> FastPaths:
        """A copy with ``bf16`` decided for this CPU."""
        return replace(self, bf16=self.use_bf16)

    def describe(self) -> str:
        on = [name for name in ("channels_last", "fold_batchnorm") if getattr(self, name)]
        if self.use_bf16:
            on.append("bf16")
        if self.sub_batch:
            on.append(f"sub_batch {self.sub_batch}")
        if self.onnxruntime:
            on.append("onnxruntime")
        return "+".join(on) or "off"


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in which every Conv2d + BatchNorm2d pair that follow each
    other in an ``nn.Sequential`` (eval mode) is merged into one Conv2d. Same outputs up
    to float rounding, one pass over memory less per layer. A network not built of
    ``nn.Sequential`` folds itself (``folded()``, as the EfficientNets do)."""
    if callable(getattr(module, "folded", None)):
        return module.folded()
    if isinstance(module, nn.Sequential):
        return _fold_sequential(module)
    module = copy.deepcopy(module)
    for name, child in list(module.named_children()):
        setattr(module, name, fold_batchnorm(child))
    return module


def _fold_sequential(body: nn.Sequential) -> nn.Sequential:
    layers, out = list(body), []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(copy.deepcopy(layer).eval(), copy.deepcopy(nxt).eval()))
            i += 2
        else:
            out.append(fold_batchnorm(layer))
            i += 1
    return nn.Sequential(*out)


class InferenceEngine:
    """Runs the classifier (and the autoencoder, when there is one) together, with the
    chosen fast paths, on ``device``.

    Built from trained networks (copied, so later changes to them need a new engine).
    osrkit's own backbones get every fast path (folded batch norm, bfloat16 weights with
    a float32 head, channels-last); a wrapped user network runs in float32 as it is.
    """

    def __init__(
        self,
        classifier: Backbone,
        autoencoder: ConvAutoencoder | None,
        fast: FastPaths,
        device: torch.device | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.split = getattr(classifier, "splittable", True)
        wants_ort = (
            self.split
            and fast.onnxruntime
            and getattr(classifier, "onnx_features", False)
            and self.device.type == "cpu"
            and input_shape is not None
        )
        # a wrapped network runs in float32 as it is, and its engine says so; so does one
        # that ONNX Runtime runs
        bf16 = self.split and not wants_ort and resolve_bf16(fast.bf16, self.device)
        self.fast = replace(fast, bf16=bf16, onnxruntime=bool(wants_ort))
        self.memory_format = torch.channels_last if fast.channels_last else torch.contiguous_format
        self.dtype = torch.bfloat16 if self.fast.bf16 else torch.float32
        fold = self.split and fast.fold_batchnorm
        net = fold_batchnorm(classifier) if fold else copy.deepcopy(classifier)
        # bfloat16 weights are cast once here, not on every call as autocast would; the
        # head stays float32 (logits keep their precision).
        self.head = copy.deepcopy(classifier.head).eval().to(self.device) if self.split else None
        self.classifier = net.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        self.ort = onnx_features(self.classifier, torch.zeros(1, *input_shape)) if wants_ort else None
        if wants_ort and self.ort is None:
            self.fast = replace(self.fast, onnxruntime=False)
        self.autoencoder = (
            copy.deepcopy(autoencoder).eval().to(self.device, self.dtype, memory_format=self.memory_format)
            if autoencoder is not None
            else None
        )

    @torch.inference_mode()
    def __call__(
        self, x: torch.Tensor, reconstruct: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, K)``, features ``(B, D)`` and reconstruction errors ``(B,)`` (None
        without an autoencoder, or with ``reconstruct=False``, which skips it) of a float
        batch ``(B, C, H, W)``, all float32 on the CPU."""
        size = self.fast.sub_batch
        if size and len(x) > size:
            parts = [self._run(chunk, reconstruct) for chunk in x.split(size)]
            logits, feats, errs = zip(*parts)
            err = None if errs[0] is None else torch.cat(errs)
            return torch.cat(logits), torch.cat(feats), err
        return self._run(x, reconstruct)

    def _run(
        self, x: torch.Tensor, reconstruct: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = x.to(self.device).contiguous(memory_format=self.memory_format)
        xc = x.to(self.dtype)
        if self.ort is not None:
            features = self.ort(x.cpu())
            logits = self.head(features)
        elif self.split:
            features = self.classifier.forward_features(xc).float()
            logits = self.head(features)
        else:
            logits, features = self.classifier.forward_with_features(xc)
            logits, features = logits.float(), features.float()
        err = None
        if self.autoencoder is not None and reconstruct:
            recon = self.autoencoder(xc)
            err = (recon.float() - x).pow(2).flatten(1).mean(1).cpu()
        return logits.cpu(), features.cpu(), err
