"""``TrainConfig``: everything that decides how the networks are trained."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from osrkit.errors import ConfigError
from osrkit.hardware import fast_by_default, resolve_bf16
from osrkit.models import backbone_entry
from osrkit.training.augment import Augmentation


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how the models are trained."""

    epochs: int = 6
    ae_epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    ae_lr: float = 3e-3
    weight_decay: float = 1e-4
    # Known training images held out for early stopping and threshold calibration; None
    # sizes it from the data (auto_val_size: 20%, at least 10 per class, at most 5000).
    val_size: int | None = None
    patience: int = 3
    seed: int = 0
    rotation_degrees: float = 10.0
    hflip_prob: float = 0.0
    crop_padding: int = 0
    # "zeros" or "reflect": how the crop's padding is filled (reflect: airbench's translation)
    crop_mode: str = "zeros"
    # Flip every image on every other epoch, each from its own first draw (airbench's
    # "alternating flip", Jordan 2024), instead of a fresh coin per image and epoch.
    alternate_flip: bool = False
    label_smoothing: float = 0.0
    # The classifier's optimiser: "adamw" (one-cycle schedule, the digit recipe) or "sgd"
    # (Nesterov, linear warm-up then linear decay, the fast CIFAR trainers' recipe; see
    # make_optimizer). The autoencoder always uses AdamW.
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup: float = 0.3
    # The SGD schedule's last learning rate, as a fraction of its peak.
    lr_end: float = 0.0
    bias_lr_mult: float = 1.0
    freeze_bn_weight: bool = False
    # Lookahead (Zhang et al., NeurIPS 2019) as airbench runs it: from 30% of training on,
    # every 5 steps the weights move to an average of their past whose decay rises to the end.
    lookahead: bool = False
    # The classifier's training budget in PFLOP (forward and backward, osrkit.training.flops):
    # when set, it decides the epochs (as many whole epochs as fit), so a protocol trains the
    # same network on any CPU.
    budget_pflop: float | None = None
    # CPU fast paths (OSRKIT_FAST=0 turns both off by default): channels-last tensors and
    # bfloat16 autocast (None = where the CPU has native support).
    channels_last: bool = field(default_factory=fast_by_default)
    bf16: bool | None = field(default_factory=lambda: None if fast_by_default() else False)

    def __post_init__(self) -> None:
        for name in ("epochs", "ae_epochs", "batch_size", "val_size", "patience"):
            value = getattr(self, name)
            if name == "val_size" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("lr", "ae_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight-decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            raise ConfigError(f"label-smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if not (0 <= self.momentum < 1 and 0 < self.warmup < 1 and self.bias_lr_mult > 0):
            raise ConfigError("momentum must be in [0, 1), warmup in (0, 1) and bias_lr_mult positive")
        if not 0 <= self.lr_end < 1:
            raise ConfigError(
                f"lr-end must be a fraction of the peak learning rate in [0, 1), got {self.lr_end!r}"
            )
        budget = self.budget_pflop
        if budget is not None and not (
            isinstance(budget, (int, float))
            and not isinstance(budget, bool)
            and math.isfinite(budget)
            and budget > 0
        ):
            raise ConfigError(f"budget must be a positive number of PFLOP, got {budget!r}")
        self.augmentation  # validates rotation and flip  # noqa: B018

    @classmethod
    def for_backbone(cls, backbone: str, **overrides: object) -> TrainConfig:
        """The default recipe of a registered backbone (its ``recipe`` over these
        defaults, which are the digit network's), with ``overrides`` on top."""
        return cls(**(backbone_entry(backbone).recipe | overrides))

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(
            self.rotation_degrees, self.hflip_prob, self.crop_padding, self.crop_mode, self.alternate_flip
        )

    @property
    def use_bf16(self) -> bool:
        """Whether training runs under bfloat16 autocast on this CPU."""
        return self.bf16_on(torch.device("cpu"))

    def bf16_on(self, device: torch.device) -> bool:
        """Whether training on ``device`` runs under bfloat16 autocast."""
        return resolve_bf16(self.bf16, device)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def without_fast_paths(self) -> TrainConfig:
        """The same training in plain float32, contiguous tensors."""
        return replace(self, channels_last=False, bf16=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
