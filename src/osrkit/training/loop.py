"""Training loops for the classifier and the autoencoder, with resumable checkpoints.

Datasets stay in memory as uint8 tensors; every step slices a whole batch, converts
it to float and augments it with batched tensor operations (no per-sample Python).
A folder too large for memory is read lazily instead (``osrkit.data.lazy``), and under
torchrun each rank trains on its part of every batch (``osrkit.training.distributed``).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from osrkit.data.batches import BatchSource
from osrkit.data.lazy import batch_source
from osrkit.data.split import data_fingerprint as data_fingerprint  # moved out, importable here
from osrkit.data.split import stratified_split as stratified_split
from osrkit.errors import ConfigError
from osrkit.hardware import autocast
from osrkit.training import distributed
from osrkit.training.checkpoint import Checkpointer
from osrkit.training.config import TrainConfig
from osrkit.training.flops import epochs_for_budget
from osrkit.training.lookahead import Lookahead
from osrkit.training.optim import make_optimizer

log = logging.getLogger(__name__)


def to_input(images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` (or ``(B, H, W)``) -> float ``(B, C, H, W)`` in [0, 1] on ``device``."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if device is not None:
        images = images.to(device, non_blocking=True)
    return images.float().div_(255.0)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def classifier_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of the classifier's logits (in float32, also under bf16 autocast),
    optionally with label smoothing (Szegedy et al. 2016)."""
    return F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)


def autoencoder_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Mean squared reconstruction error (in float32, also under bf16 autocast)."""
    return F.mse_loss(model(x).float(), x)


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor | BatchSource,
    labels: torch.Tensor | None,
    loss_fn: LossFn,
    batches: Iterable[torch.Tensor],
    gen: torch.Generator,
    cfg: TrainConfig,
    on_step: Callable[[float], None] | None = None,
    device: torch.device | None = None,
    shard: distributed.Shard | None = None,
    epoch: int = 0,
    lookahead: Lookahead | None = None,
) -> float:
    """One pass over ``batches`` (index tensors into the in-memory uint8 ``images``, or
    into a ``BatchSource`` such as a lazily read folder): slice, convert and augment
    whole batches, then step. Returns the mean loss (over all ranks); ``on_step``
    receives the running mean after every step (for a progress bar).

    ``shard``: this rank's part of every batch (default: all of it). Its mean loss is
    weighted by its share of the batch, so DDP's average of the ranks' gradients is the
    gradient of the whole batch's mean loss (see ``osrkit.training.distributed``).
    The fast paths of ``cfg`` apply: channels-last tensors and bfloat16 autocast.
    ``epoch`` (0-based) decides alternating flips; ``lookahead`` averages the weights after
    each step (``osrkit.training.lookahead``).
    """
    model.train()
    device = device or torch.device("cpu")
    shard = shard or distributed.Shard()
    aug, fmt, bf16 = cfg.augmentation, cfg.memory_format, cfg.bf16_on(device)
    total, count = 0.0, 0
    # (global batch size, offset of this rank's rows, their indices)
    where: deque[tuple[int, int, torch.Tensor]] = deque()

    def parts() -> Iterable[torch.Tensor]:
        for idx in batches:
            part, offset = shard.part(idx)
            where.append((len(idx), offset, part))
            yield part

    for xb, yb in batch_source(images, labels).fetch(parts()):
        size, offset, rows = where.popleft()
        # augmentation draws from the CPU generator, so runs on any device are alike
        x = aug(to_input(xb), gen, size, offset, rows, epoch)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = yb.to(device, non_blocking=True) if yb is not None else None
        with autocast(bf16, device.type):
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        (loss * (len(xb) * shard.world / size) if shard.world > 1 else loss).backward()
        opt.step()
        sched.step()
        if lookahead is not None:
            lookahead.step(sched.last_epoch)
        total += loss.item() * len(xb)
        count += len(xb)
        if on_step is not None:
            on_step(total / count)
    total, count = distributed.all_sum([total, count]) if shard.world > 1 else (total, count)
    return total / max(count, 1)


def _fit(
    model: nn.Module,
    stage: str,
    images: torch.Tensor | BatchSource,
    labels: torch.Tensor | None,
    loss_fn: LossFn,
    validate: Callable[[nn.Module], float],
    epochs: int,
    lr: float,
    cfg: TrainConfig,
    checkpoint: Checkpointer | None,
    progress: bool,
    device: torch.device | None = None,
    on_epoch: Callable[[int, nn.Module], dict | None] | None = None,
    optimizer: str = "adamw",
    metric_format: str = "validation metric %.5g",
) -> dict:
    """Generic loop: ``optimizer`` (``adamw`` or ``sgd``) with the recipe's schedule
    (``make_optimizer``), best-on-validation
    weights, early stopping, a checkpoint after every epoch. ``on_epoch(epoch, model)`` runs
    after each epoch's validation; what it returns joins that epoch's history entry.
    ``metric_format`` labels the validation metric in each epoch's log line.

    Under torchrun the model trains as ``DistributedDataParallel``; every rank validates
    and keeps the same network (rank 0's buffers), and only rank 0 writes checkpoints."""
    device = device or torch.device("cpu")
    model.to(device, memory_format=cfg.memory_format)
    shard = distributed.Shard.current()
    source = batch_source(images, labels)
    steps = shard.steps(len(source), cfg.batch_size)  # the batches each epoch really steps
    opt, sched = make_optimizer(model, lr, epochs * steps, cfg, optimizer)
    lookahead = Lookahead(model, epochs * steps) if cfg.lookahead and stage == "classifier" else None
    gen = torch.Generator().manual_seed(cfg.seed + (0 if stage == "classifier" else 1))
    history: list[dict] = []
    best = {"metric": math.inf, "epoch": -1, "state": copy.deepcopy(model.state_dict())}
    start, bad = 0, 0
    saved = checkpoint.load(stage) if checkpoint else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if lookahead is not None:
            lookahead.load_state_dict(saved.get("lookahead", {}))
        gen.set_state(saved["generator"])
        # dropout draws from the global generator (one per rank under torchrun)
        torch.set_rng_state(saved["torch_rng_ranks"][shard.rank] if shard.world > 1 else saved["torch_rng"])
        best = {"metric": saved["best_metric"], "epoch": saved["best_epoch"], "state": saved["best_state"]}
        start, bad, history = saved["epoch"] + 1, saved["bad_epochs"], list(saved["history"])
        log.info("%s: resuming from checkpoint after epoch %d", stage, start)
        if saved.get("done"):
            start = epochs
    if shard.world > 1:
        distributed.agree(
            start,
            f"the epoch to resume {stage} training from",
            f"put {checkpoint and checkpoint.folder} on storage every machine shares, or delete it",
        )
    net = distributed.wrap(model, device)
    for epoch in range(start, epochs):
        bar = tqdm(
            shard.trim(_batches(len(source), cfg.batch_size, gen)),
            desc=f"{stage} {epoch + 1}/{epochs}",
            disable=not progress or shard.rank != 0,
            leave=False,
            unit="batch",
        )
        started = time.perf_counter()
        train_loss = train_epoch(
            net,
            opt,
            sched,
            source,
            labels,
            loss_fn,
            bar,
            gen,
            cfg,
            on_step=lambda loss, bar=bar: bar.set_postfix(loss=f"{loss:.4f}", refresh=False),
            device=device,
            shard=shard,
            epoch=epoch,
            lookahead=lookahead,
        )
        if lookahead is not None:
            lookahead.end_epoch()
        train_s = time.perf_counter() - started
        distributed.sync_buffers(model)
        model.eval()
        with autocast(cfg.bf16_on(device), device.type):
            metric = validate(model)
        if not math.isfinite(metric):
            raise ConfigError(
                f"{stage} training diverged (validation metric {metric}); lower the learning rate"
            )
        history.append(
            {"epoch": epoch + 1, "train_loss": train_loss, "val_metric": metric, "train_s": train_s}
        )
        if on_epoch is not None:
            history[-1] |= on_epoch(epoch + 1, model) or {}
        log.info(
            "%s epoch %d/%d: train loss %.4f, " + metric_format, stage, epoch + 1, epochs, train_loss, metric
        )
        if metric < best["metric"]:
            best, bad = {"metric": metric, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}, 0
        else:
            bad += 1
        stop = bad >= cfg.patience or epoch + 1 == epochs
        rng = {"torch_rng": torch.get_rng_state()}
        if checkpoint and shard.world > 1:  # a collective: every rank has the same checkpoint
            rng["torch_rng_ranks"] = distributed.gather(torch.get_rng_state())
        if checkpoint and shard.rank == 0:
            checkpoint.save(
                stage,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "epoch": epoch,
                    "bad_epochs": bad,
                    "best_metric": best["metric"],
                    "best_epoch": best["epoch"],
                    "best_state": best["state"],
                    "history": history,
                    "done": stop,
                    "lookahead": lookahead.state_dict() if lookahead is not None else {},
                }
                | rng,
            )
        if stop:
            if bad >= cfg.patience:
                log.info("%s: early stop after epoch %d", stage, epoch + 1)
            break
    model.load_state_dict(best["state"])
    model.to(memory_format=torch.contiguous_format).eval()
    return {"best_epoch": best["epoch"] + 1, "best_val_metric": best["metric"], "history": history}


@torch.inference_mode()
def _predict_batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    def compute(rows: slice) -> torch.Tensor:
        chunks = (
            to_input(c, device=device).contiguous(memory_format=memory_format)
            for c in images[rows].split(batch_size)
        )
        return torch.cat([fn(x).float().cpu() for x in chunks])

    # under torchrun each rank predicts its part and all receive every part, in order
    return distributed.map_sharded(compute, len(images), torch.cat)


def _first_rows(images: torch.Tensor | BatchSource, n: int) -> torch.Tensor:
    """The first ``n`` uint8 images of the training rows (read from disk for a lazy folder)."""
    if isinstance(images, torch.Tensor):
        return images[:n]
    return next(iter(batch_source(images, None).fetch([torch.arange(min(len(images), n))])))[0]


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    cfg: TrainConfig,
    checkpoint: Checkpointer | None = None,
    progress: bool = False,
    device: torch.device | None = None,
    on_epoch: Callable[[int, nn.Module], dict | None] | None = None,
) -> dict:
    """Train with cross-entropy; keep the weights with the lowest validation error
    (``on_epoch``: see ``_fit``). A network with ``init_from_data`` (``colour_cnn``'s
    whitening stem) is first set from the training images; ``cfg.budget_pflop`` decides
    the epochs (``osrkit.training.flops.epochs_for_budget``)."""
    # read only where needed: from a lazily read folder these rows are decoded from disk
    init = getattr(model, "init_from_data", None)
    if init is not None:
        init(_first_rows(images, 5000))
    epochs = cfg.epochs
    if cfg.budget_pflop is not None:
        shape = tuple(to_input(_first_rows(images, 1)).shape[1:])
        epochs = epochs_for_budget(model, cfg.budget_pflop, len(labels), shape)

    def validate(m: nn.Module) -> float:
        # one view: the test-time views (colour_cnn's flips and shifts) would multiply the
        # cost of every epoch's validation, and only rank the epochs
        views = getattr(m, "test_views", None)
        if views is not None:
            m.test_views = False
        try:
            logits = _predict_batched(m, val_images, cfg.memory_format, device=device)
        finally:
            if views is not None:
                m.test_views = views
        err = (logits.argmax(1) != val_labels).float().mean().item()
        # Ties in error are broken by the validation loss (scaled far below one error).
        return err + 1e-6 * F.cross_entropy(logits, val_labels).item()

    return _fit(
        model,
        "classifier",
        images,
        labels,
        functools.partial(classifier_loss, label_smoothing=cfg.label_smoothing),
        validate,
        epochs,
        cfg.lr,
        cfg,
        checkpoint,
        progress,
        device,
        on_epoch,
        cfg.optimizer,
        "validation error %.4f",  # the share of validation images misclassified
    )


def train_autoencoder(
    model: nn.Module,
    images: torch.Tensor,
    val_images: torch.Tensor,
    cfg: TrainConfig,
    checkpoint: Checkpointer | None = None,
    progress: bool = False,
    device: torch.device | None = None,
) -> dict:
    """Train to reconstruct the known training images; keep the lowest validation MSE."""

    def validate(m: nn.Module) -> float:
        errors = _predict_batched(m.reconstruction_error, val_images, cfg.memory_format, device=device)
        return errors.mean().item()

    return _fit(
        model,
        "autoencoder",
        images,
        None,
        autoencoder_loss,
        validate,
        cfg.ae_epochs,
        cfg.ae_lr,
        cfg,
        checkpoint,
        progress,
        device,
        metric_format="validation MSE %.4g",  # mean squared reconstruction error
    )
