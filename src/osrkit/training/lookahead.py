"""Lookahead weight averaging as airbench runs it (Jordan 2024, after Zhang et al.,
"Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019).

From ``START`` of the run's steps on, every ``EVERY`` steps an average of the weights (and
batch-norm statistics) moves toward the network's, and the network is set to that
average. The average's decay rises as ``(step / total) ** POWER``: the network moves fast
early and is averaged strongly at the end. At the end of every epoch the network takes the
average, so validation and the saved weights see it.

Written here because no maintained package implements this schedule for plain PyTorch
(``torch.optim.swa_utils.AveragedModel`` keeps a separate copy and never writes back).
"""

from __future__ import annotations

import torch
from torch import nn

START = 0.3  # airbench starts at epoch 3 of 9.9
EVERY = 5
BASE_DECAY = 0.95
POWER = 3.0


class Lookahead:
    """The averaged weights of ``model`` over a run of ``total_steps`` optimizer steps."""

    def __init__(self, model: nn.Module, total_steps: int) -> None:
        self.model = model
        self.total_steps = max(1, total_steps)
        self.average: dict[str, torch.Tensor] | None = None

    def _floats(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def step(self, step: int) -> None:
        """After optimizer step number ``step`` (1-based over the whole run)."""
        if step < START * self.total_steps or step % EVERY:
            return
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self._floats().items()}
            return
        decay = BASE_DECAY**EVERY * (step / self.total_steps) ** POWER
        self._blend(decay)

    @torch.no_grad()
    def _blend(self, decay: float) -> None:
        assert self.average is not None
        for key, value in self._floats().items():
            avg = self.average[key]
            avg.lerp_(value, 1 - decay)
            value.copy_(avg)

    def end_epoch(self) -> None:
        """Set the network to the average (once averaging has begun)."""
        if self.average is not None:
            self._blend(1.0)

    def state_dict(self) -> dict:
        return {"average": self.average}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("average")
        self.average = None if saved is None else {k: v.clone() for k, v in saved.items()}
