"""Training on 2 processes with torch.distributed (gloo on the CPU), against 1 process.

The ranks are forked with ``torch.multiprocessing`` (spawning would import torch and
osrkit again, twice, for every test) and given the environment torchrun gives
them (RANK, WORLD_SIZE, MASTER_ADDR, ...), so the command's own code joins the group.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from osrkit import OpenSetRecognizer
from osrkit.cli import main
from osrkit.data.catalog import load_dataset
from osrkit.evaluation.evaluate import evaluate
from osrkit.perf.serve_load import free_port
from osrkit.training.config import TrainConfig
from osrkit.training.distributed import Shard
from osrkit.training.loop import classifier_loss, train_epoch

TIMEOUT_S = 300  # a hang guard: 11 s on idle cores, past 120 s on cores shared with a training run


def rank_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def spawn(fn, args: tuple, world: int = 2) -> None:
    """Run ``fn(rank, *args)`` on ``world`` processes; fail (never hang) past TIMEOUT_S."""
    ctx = mp.start_processes(fn, args=args, nprocs=world, join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"ranks still running after {TIMEOUT_S} s")


# ------------------------------------------------------------------ the batch rule, exactly
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # no batch norm, no dropout


def tiny_data() -> tuple[torch.Tensor, torch.Tensor, TrainConfig]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (75, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (75,), generator=g)
    cfg = TrainConfig(
        batch_size=16, rotation_degrees=10.0, hflip_prob=0.5, crop_padding=1, channels_last=False, bf16=False
    )
    return images, labels, cfg


def tiny_epoch(model: nn.Module, shard: Shard) -> None:
    images, labels, cfg = tiny_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    gen = torch.Generator().manual_seed(2)
    batches = shard.trim(list(torch.randperm(len(images), generator=gen).split(cfg.batch_size)))
    train_epoch(model, opt, sched, images, labels, classifier_loss, batches, gen, cfg, shard=shard)


def _tiny_rank(rank: int, port: int, out: str) -> None:
    rank_env(rank, 2, port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = tiny_net()
        tiny_epoch(nn.parallel.DistributedDataParallel(model), Shard(rank, 2))
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_step_as_one_process_with_the_whole_batch(tmp_path):
    """Each rank takes its part of every global batch (75 images in batches of 16: the
    last one of 11 rows splits 6 + 5), augmented as the whole batch would be, its loss
    weighted by its share: DDP's averaged gradient is the one-process gradient."""
    spawn(_tiny_rank, (free_port(), str(tmp_path / "ddp.pt")))
    single = tiny_net()
    tiny_epoch(single, Shard())
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the command, 2 ranks
def _train_rank(rank: int, port: int, argv: list[str], interrupt: bool, logs: str) -> None:
    rank_env(rank, 2, port)
    handler = logging.FileHandler(f"{logs}.{rank}")
    logging.getLogger("osrkit").addHandler(handler)
    logging.getLogger("osrkit").setLevel(logging.INFO)
    if interrupt:  # Ctrl-C on every rank as the second epoch starts
        import osrkit.training.loop as training

        original, calls = training.train_epoch, []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        training.train_epoch = interrupted
    code = main(argv)
    handler.close()
    Path(f"{logs}.{rank}.rc").write_text(str(code))


def rcs(logs: Path) -> list[int]:
    return [int(Path(f"{logs}.{r}.rc").read_text()) for r in range(2)]


@pytest.mark.integration  # CI runs it after the default suite (make test-integration)
def test_two_process_training_resumes_and_matches_one_process(tmp_path, shared_data, capsys):
    common = [
        "--train",
        "mnist:train",
        "--max-train",
        "1200",
        "--val-size",
        "200",
        "--epochs",
        "2",
        "--batch-size",
        "32",
    ]
    common += ["--no-autoencoder", "--device", "cpu", "--data-root", str(shared_data), "-q"]
    one, two, logs = tmp_path / "one", tmp_path / "two", tmp_path / "log"

    assert main(["train", "--out", str(one), *common]) == 0
    capsys.readouterr()

    # interrupted as epoch 2 starts: nothing written but rank 0's checkpoint of epoch 1
    spawn(_train_rank, (free_port(), ["train", "--out", str(two), *common], True, str(logs)))
    assert rcs(logs) == [130, 130]
    assert (tmp_path / "two.checkpoints" / "classifier.pt").is_file() and not two.exists()

    # the same command again resumes from it; rank 0 alone writes the model folder. -v: the
    # log at DEBUG on both ranks (rank 1 logs warnings only by default, -q on all ranks)
    spawn(_train_rank, (free_port(), ["train", "--out", str(two), *common, "-v"], False, str(logs)))
    assert rcs(logs) == [0, 0]
    for rank in range(2):
        assert "resuming from checkpoint after epoch 1" in Path(f"{logs}.{rank}").read_text()
    assert "rank 1 of 2 joined the gloo process group" in Path(f"{logs}.1").read_text()
    assert not (tmp_path / "two.checkpoints").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("log")) == ["one", "two"]

    # the same data and seed on 1 and 2 processes: models that predict alike. Not bit-equal:
    # batch norm sees each rank's half batch, and dropout masks come from each rank's generator
    known = load_dataset("mnist:test", shared_data).take(1000, seed=0)
    unknown = load_dataset("fashion-mnist:test", shared_data).take(500, seed=0)
    metrics = []
    for folder in (one, two):
        model = OpenSetRecognizer.from_pretrained(folder, device="cpu")
        metrics.append(evaluate(model, known, unknown).metrics)
    a, b = metrics
    assert abs(a["closed_set_accuracy"] - b["closed_set_accuracy"]) <= 0.02
    assert a["closed_set_accuracy"] > 0.85
    decision = "max_logit"
    assert abs(a["scorers"][decision]["auroc"] - b["scorers"][decision]["auroc"]) <= 0.03


@pytest.mark.slow
def test_torchrun_command_line(tmp_path, shared_data):
    """The documented command: torchrun starts 2 gloo ranks of `osrkit train`."""
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "osrkit", "train"]
    cmd += ["--out", str(tmp_path / "m"), "--train", "mnist:train", "--max-train", "1200"]
    cmd += ["--val-size", "200", "--epochs", "1", "--no-autoencoder", "--device", "cpu"]
    cmd += ["--data-root", str(shared_data), "-q"]
    env = os.environ | {"PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 processes (torch.distributed)" in done.stdout
    assert done.stdout.count("saved model to") == 1  # rank 0 alone reports and writes
    OpenSetRecognizer.from_pretrained(tmp_path / "m", device="cpu")


@pytest.mark.parametrize("n", [1, 3, 4, 63, 64, 65, 66, 67, 128, 130, 131])
@pytest.mark.parametrize("world", [1, 2])
def test_schedule_steps_are_the_batches_trim_keeps(n, world):
    """The learning-rate schedule was sized by every batch, while a 2-rank epoch drops a
    last batch too small for batch norm: the schedule ran one step short of its end."""
    shard = Shard(0, world)
    batches = list(torch.arange(n).split(64))
    assert shard.steps(n, 64) == len(shard.trim(batches))
    assert shard.steps(n, 64) == len(batches) - (world > 1 and len(batches[-1]) < 2 * world)
