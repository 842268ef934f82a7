"""Training compute in FLOPs, the measure of a recipe that does not depend on the CPU.

``training_flops`` counts one training image's forward and backward pass with PyTorch's
own counter (``torch.utils.flop_counter``: matrix multiplies and convolutions, 2 FLOPs a
multiply-add, the convention of the published budgets such as airbench's 0.36 PFLOP);
element-wise work (batch norm, activations, pooling) is not counted. A frozen layer's
weight gradient is not computed, so it is not counted either.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("osrkit.training.recipe")  # shown with the recipe's line


def training_flops(net: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one training image of ``shape`` ``(C, H, W)`` through ``net`` (forward and
    backward of the cross-entropy loss), counted on a copy in training mode."""
    net = copy.deepcopy(net).float().train()  # the count's step must not touch the network
    x = torch.rand(2, *shape)
    with FlopCounterMode(display=False) as counter:
        logits = net(x)
        F.cross_entropy(logits, torch.zeros(2, dtype=torch.int64)).backward()
    return counter.get_total_flops() // 2


def epochs_for_budget(net: nn.Module, budget_pflop: float, n_images: int, shape: tuple[int, ...]) -> int:
    """The whole epochs of ``n_images`` training images of ``shape`` ``(C, H, W)`` that fit
    in ``budget_pflop`` (at least one); a log line gives the arithmetic."""
    per_image = training_flops(net, shape)
    epochs = max(1, math.floor(budget_pflop * 1e15 / (per_image * n_images)))
    log.info(
        "budget %.3g PFLOP: %d epochs of %d images at %.1f MFLOP each (%.3f PFLOP)",
        budget_pflop,
        epochs,
        n_images,
        per_image / 1e6,
        epochs * per_image * n_images / 1e15,
    )
    return epochs
