"""Training throughput for ``osrkit perf speed``: osrkit's loop, fast paths on and off,
against a conventional per-sample ``Dataset`` + ``DataLoader`` loop for the same model,
batch size and augmentation, measured interleaved in one process."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from osrkit.data.spec import InputSpec
from osrkit.data.transforms import chw_to_pil
from osrkit.hardware import elapsed
from osrkit.models import Backbone, create_backbone, default_backbone
from osrkit.training.config import TrainConfig
from osrkit.training.loop import classifier_loss, make_optimizer, train_epoch


class ConventionalDataset(Dataset):
    """The tutorial way: one PIL image per ``__getitem__``, transformed on its own.

    Random horizontal flip and random rotation (bilinear, as our batched augmentation),
    then to a float tensor in [0, 1], like torchvision's ``RandomHorizontalFlip``,
    ``RandomRotation`` and ``ToTensor`` (not importable here, hence written out).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> None:
        self.images, self.labels = images.numpy(), labels
        self.rotation, self.hflip = cfg.rotation_degrees, cfg.hflip_prob

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = chw_to_pil(self.images[i])  # from (C, H, W) uint8
        if self.hflip and torch.rand(1).item() < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rotation:
            angle = float(torch.empty(1).uniform_(-self.rotation, self.rotation))
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.array(img, dtype=np.float32)).div_(255.0)
        return (x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)), self.labels[i]


def _network(images: torch.Tensor, labels: torch.Tensor) -> Backbone:
    """The network ``fit`` would build for these images' shape and classes."""
    spec = InputSpec(*images.shape[1:])
    return create_backbone(default_backbone(spec, pretrained=False), spec, int(labels.max()) + 1)


def conventional_throughput(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> float:
    """Images/s of one epoch of the conventional loop (float32, NCHW, DataLoader defaults)."""
    torch.manual_seed(cfg.seed)
    model = _network(images, labels).train()
    loader = DataLoader(ConventionalDataset(images, labels, cfg), batch_size=cfg.batch_size, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=len(loader))
    warmup, n, t0 = 3, 0, 0.0
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            t0, n = time.perf_counter(), 0
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss.item()
        n += len(x)
    return n / (time.perf_counter() - t0)


def osrkit_throughput(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> float:
    """Images/s of one epoch of osrkit's own loop (``training.train_epoch``) under ``cfg``."""
    torch.manual_seed(cfg.seed)
    model = _network(images, labels).to(memory_format=cfg.memory_format)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = list(torch.randperm(len(images), generator=gen).split(cfg.batch_size))
    opt, sched = make_optimizer(model, cfg.lr, len(batches), cfg)

    warmup = 3
    train_epoch(model, opt, sched, images, labels, classifier_loss, batches[:warmup], gen, cfg)
    rest = batches[warmup:]
    loss = classifier_loss
    seconds = elapsed(lambda: train_epoch(model, opt, sched, images, labels, loss, rest, gen, cfg))
    return sum(len(b) for b in rest) / seconds


def training_speed(images: torch.Tensor, labels: torch.Tensor, repeats: int) -> dict:
    """Median images/s of the three training loops, measured interleaved."""
    fast = TrainConfig(channels_last=True, bf16=None)  # explicit: OSRKIT_FAST must not turn it off
    variants = {
        "conventional (Dataset + DataLoader, float32)": lambda: conventional_throughput(images, labels, fast),
        "osrkit loop, fast paths off": lambda: osrkit_throughput(images, labels, fast.without_fast_paths()),
        f"osrkit loop, fast paths on ({_train_paths(fast)})": lambda: osrkit_throughput(images, labels, fast),
    }
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            runs[name].append(fn())
    return {name: statistics.median(v) for name, v in runs.items()}


def _train_paths(cfg: TrainConfig) -> str:
    on = (["channels_last", "fused AdamW"] if cfg.channels_last else []) + (["bf16"] if cfg.use_bf16 else [])
    return "+".join(on) or "none"
