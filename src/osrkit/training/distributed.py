"""Training on several processes with PyTorch's own ``torch.distributed``.

``torchrun --nproc-per-node N -m osrkit train ...`` starts N processes (ranks); each joins
the process group (gloo on CPUs, NCCL on CUDA GPUs) in ``session`` and trains a
``DistributedDataParallel`` copy of the networks. Nothing here schedules work or holds
parameters: torchrun starts and watches the processes, DDP all-reduces the gradients.

Sharding rule (``Shard``): every rank draws the same seeded permutation of the training
set, so the global batches are those of a single process with the same ``--batch-size``
B. Rank r takes the r-th contiguous part of each global batch (B / N rows, the parts
differing by at most one row) and weights its mean loss by its share of the batch
(``rows_r * N / B``); DDP averages the gradients over the N ranks, so every step follows
the gradient of the whole batch's mean loss, as one process with batch B does. The
augmentation draws its random numbers for the whole batch and each part takes its rows
(``Augmentation(total=, offset=)``), so the images are augmented alike too. What still
differs from one process: batch-norm statistics come from each rank's B / N rows (the
running averages are rank 0's, broadcast by DDP), and float sums run in another order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from osrkit.errors import ConfigError
from osrkit.hardware import launched, resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")


def active() -> bool:
    """Whether this process is one of several ranks of a joined process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many ranks train together (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes the outputs: rank 0, or the only process."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """The collective backend of a device: NCCL for CUDA GPUs, gloo for CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def session(device: str | torch.device = "auto") -> Iterator[str]:
    """Join the process group for the block when torchrun started several ranks, and
    yield the device this rank uses (``cuda:LOCAL_RANK`` for a CUDA device given without
    an index); a single process (or one already in a group) gets ``device`` unchanged."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield str(device)
        return
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"distributed training runs on CPUs (gloo) or CUDA GPUs (NCCL), not {dev.type}")
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.index is None:
            if local >= torch.cuda.device_count():
                raise ConfigError(
                    f"local rank {local} has no GPU (this machine has {torch.cuda.device_count()}); "
                    "start at most that many processes per node (--nproc-per-node)"
                )
            dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = backend_for(dev)
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"could not join the process group ({backend}): {first}") from None
    log.info("rank %d of %d joined the %s process group on %s", rank(), world_size(), backend, dev)
    try:
        yield str(dev)
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world``: which contiguous part of a batch or a range it takes
    (the parts differ in size by at most one)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        """This process's shard (the whole of everything without a process group)."""
        return cls(rank(), world_size())

    def range(self, n: int) -> slice:
        """This rank's part of ``range(n)``."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def part(self, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's rows of the global batch ``idx`` and where they start in it."""
        if self.world == 1:
            return idx, 0
        rows = self.range(len(idx))
        return idx[rows], rows.start

    def drops_last(self, n: int, batch_size: int) -> bool:
        """Whether ``n`` items in global batches of ``batch_size`` end in a batch too small
        to give every rank 2 rows (batch norm needs 2 per rank); never in one process."""
        last = n - (math.ceil(n / batch_size) - 1) * batch_size
        return self.world > 1 and n > 0 and last < 2 * self.world

    def steps(self, n: int, batch_size: int) -> int:
        """Optimiser steps per epoch over ``n`` items: the batches ``trim`` keeps."""
        return math.ceil(n / batch_size) - self.drops_last(n, batch_size)

    def trim(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """The global batches without a last one too small to give every rank 2 rows
        (see ``drops_last``); a single process keeps every batch."""
        n = sum(len(b) for b in batches)
        return batches[:-1] if batches and self.drops_last(n, len(batches[0])) else batches


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` under a process group, else itself."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), so that all
    ranks validate, keep and save the same network."""
    if active():
        for buf in model.buffers():
            dist.broadcast(buf.data, 0)


def all_sum(values: list[float]) -> list[float]:
    """Each value summed over the ranks (``values`` itself without a process group)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def map_sharded(compute: Callable[[slice], T], n: int, combine: Callable[[list[T]], T]) -> T:
    """``compute`` over ``range(n)``: under a process group each rank computes its
    contiguous part and every rank receives all parts (``all_gather_object``, which
    handles parts of unequal length) joined in order by ``combine``. The result is the
    one-process result, on every rank."""
    if not active():
        return compute(slice(0, n))
    rows = Shard.current().range(n)
    mine = compute(rows) if rows.stop > rows.start else None
    return combine([p for p in gather(mine) if p is not None])


def agree(value: object, what: str, hint: str) -> None:
    """Refuse in one line (on every rank) when the ranks hold different ``value``s."""
    values = gather(value)
    if any(v != values[0] for v in values):
        raise ConfigError(f"the ranks disagree on {what} ({values}); {hint}")
