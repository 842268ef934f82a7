"""--device and device=: CPU everywhere here; CUDA tests skip where there is none."""

from __future__ import annotations

import pytest
import torch

from osrkit import OpenSetRecognizer
from osrkit.cli import main
from osrkit.errors import ConfigError
from osrkit.hardware import resolve_device
from tests.conftest import FAST, synthetic_set


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    mps = getattr(torch.backends, "mps", None)
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps and mps.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(capsys):
    with pytest.raises(ConfigError, match="no CUDA GPU; use --device cpu"):
        OpenSetRecognizer(device="cuda:0").fit(synthetic_set(100))  # checked before any training
    assert main(["train", "--out", "/tmp/never", "--device", "cuda", "--max-train", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_and_predict_match_cpu_labels():
    train = synthetic_set(600)
    gpu = OpenSetRecognizer(device="cuda").fit(train, FAST)
    cpu = OpenSetRecognizer(device="cpu").fit(train, FAST)
    assert next(gpu.classifier_.parameters()).device.type == "cuda"
    test = synthetic_set(100, seed=4)
    assert (gpu.predict(test) == cpu.predict(test)).mean() > 0.9
