"""The optimisers and learning-rate schedules of the training recipes."""

from __future__ import annotations

import torch
from torch import nn

from osrkit.training.config import TrainConfig


def make_optimizer(
    model: nn.Module, lr: float, total_steps: int, cfg: TrainConfig, optimizer: str = "adamw"
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and its learning-rate schedule over ``total_steps``.

    ``adamw``: AdamW with a one-cycle schedule (Smith and Topin 2019). With the fast paths
    on (``cfg.channels_last``), AdamW's fused CPU kernel updates all parameters in one call
    instead of a dozen small tensor operations per parameter.

    ``sgd``: Nesterov SGD (momentum ``cfg.momentum``), the learning rate rising linearly
    from a fifth of its peak over the first ``cfg.warmup`` of the steps, then falling
    linearly to ``cfg.lr_end`` of it (zero by default), as in the fast CIFAR-10 trainers
    (Page 2018; Jordan 2024's airbench): biases and batch-norm parameters get no weight
    decay and ``cfg.bias_lr_mult`` times the learning rate, and with
    ``cfg.freeze_bn_weight`` the batch-norm scales stay at 1.
    """
    if optimizer == "adamw":
        fused = True if cfg.channels_last else None
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=fused)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    if cfg.freeze_bn_weight:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay, no_decay = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[lr, lr * cfg.bias_lr_mult],
        total_steps=total_steps,
        pct_start=cfg.warmup,
        anneal_strategy="linear",
        cycle_momentum=False,
        div_factor=5.0,
        # OneCycleLR ends at the start rate (peak / 5) divided by this
        final_div_factor=0.2 / cfg.lr_end if cfg.lr_end > 0 else 1e6,
    )
    return opt, sched
