import json

import numpy as np
import pytest
import torch

from osrkit.cli import main
from osrkit.hardware import mm_gflops
from osrkit.perf.speed import (
    SpeedOptions,
    compiled_throughput,
    forward_flops,
    latency_ms,
    score_and_decide,
    speed,
    targets,
)
from osrkit.perf.training_speed import ConventionalDataset, conventional_throughput, osrkit_throughput
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.training.config import TrainConfig
from tests.conftest import synthetic_set


def test_conventional_dataset_is_per_sample_and_matches_without_augmentation():
    data = synthetic_set(10)
    plain = ConventionalDataset(data.images, data.labels, TrainConfig(rotation_degrees=0, hflip_prob=0))
    x, y = plain[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, data.images[3].float() / 255)  # images are (N, 1, 28, 28)
    assert y == data.labels[3]
    flipped = ConventionalDataset(data.images, data.labels, TrainConfig(rotation_degrees=0, hflip_prob=1))
    torch.testing.assert_close(flipped[3][0], data.images[3].flip(-1).float() / 255)
    rotated = ConventionalDataset(data.images, data.labels, TrainConfig(rotation_degrees=30, hflip_prob=0))
    torch.manual_seed(0)
    assert not torch.equal(rotated[3][0], x) and 0 <= rotated[3][0].min() <= rotated[3][0].max() <= 1


def test_forward_flops_match_a_hand_count(fitted):
    # classifier: conv 1->16 and 16->16 at 28x28, 16->32 and 32->32 at 14x14, 32->64 at 7x7,
    # linear 576->128 and 128->10 (2 FLOPs per multiply-accumulate)
    clf = 2 * 9 * (28 * 28 * (1 * 16 + 16 * 16) + 14 * 14 * (16 * 32 + 32 * 32) + 7 * 7 * 32 * 64)
    clf += 2 * (576 * 128 + 128 * 10)
    # autoencoder: stride-2 convs 1->32 (to 14x14) and 32->64 (to 7x7), linears 3136<->32,
    # transposed convs 64->32 (7x7 in) and 32->1 (14x14 in), 4x4 kernels
    ae = 2 * 9 * (14 * 14 * 32 + 7 * 7 * 32 * 64) + 2 * 2 * 3136 * 32
    ae += 2 * 16 * (7 * 7 * 64 * 32 + 14 * 14 * 32 * 1)
    assert forward_flops(fitted) == clf + ae


def test_mm_rate_is_positive_and_finite():
    rate = mm_gflops(n=256, repeats=2)
    assert np.isfinite(rate) and rate > 0


def test_training_loops_run_and_report_throughput():
    data = synthetic_set(6 * 64)
    cfg = TrainConfig(batch_size=64)
    assert conventional_throughput(data.images, data.labels, cfg) > 0
    assert osrkit_throughput(data.images, data.labels, cfg) > 0
    assert osrkit_throughput(data.images, data.labels, cfg.without_fast_paths()) > 0


def test_score_and_decide_matches_predict(fitted):
    x = synthetic_set(50, seed=3).images
    assert (score_and_decide(fitted, x) == fitted.predict(x)).all()
    p50, p99 = latency_ms(fitted, x, 20)
    assert 0 < p50 <= p99


def test_targets_compare_against_goals():
    r = {
        "training_img_s": {"conventional": 1000.0, "ours": 3500.0},
        "scoring_img_s": {"1024": {"on": 9000.0, "off": 3000.0}},
        "mm_fraction": 0.5,
        "latency_ms": {"on": (1.0, 3.0)},
        "metric_drift": {"max_abs_diff": 0.002},
    }
    lines = targets(r)
    assert lines[0] == "target training-speedup: 3.50x (goal >= 3x) ok"
    assert lines[1].startswith("target scoring-throughput-batch-1024: 9,000") and lines[1].endswith("short")
    assert lines[3].endswith("ok") and lines[4].endswith("short")


@pytest.mark.integration  # CI runs it after the default suite (make test-integration)
def test_speed_end_to_end_on_a_saved_model(tmp_path, fitted, shared_data):
    fitted.save_pretrained(tmp_path / "model")
    options = SpeedOptions(
        data_root=str(shared_data),
        train_images=640,
        repeats=1,
        latency_calls=20,
        model=str(tmp_path / "model"),
        run=False,
        eval_images=300,
    )
    r = speed(tmp_path / "out", options)
    saved = json.loads((tmp_path / "out" / "speed.json").read_text())
    # five targets of the digit model, two of the pretrained backbone
    assert saved["targets"] == r["targets"] and len(r["targets"]) == 7
    assert set(r["scoring_img_s"]) == {"1", "64", "1024"}
    p = r["pretrained"]
    assert set(p["forward"]) == {"reference", "torch fast", "onnxruntime"}
    assert (
        p["forward"]["onnxruntime"]["uses_onnxruntime"] and not p["forward"]["torch fast"]["uses_onnxruntime"]
    )
    assert set(p["training"]) == {"freeze 0", "freeze 6"} and all(
        v["img_s"] > 0 for v in p["training"].values()
    )
    md = (tmp_path / "out" / "speed.md").read_text()
    assert "## efficientnet_lite0 at 128 px" in md and "| training step, freeze 6 |" in md
    assert md.rstrip().splitlines()[-1].startswith("target pretrained-training-fraction-of-mm-rate")
    assert "target fast-path-metric-drift" in md
    assert r["metric_drift"]["off"]["closed_set_accuracy"] >= 0  # computed on real MNIST
    assert OpenSetRecognizer.from_pretrained(tmp_path / "model")  # model untouched


def test_cli_bench_needs_a_model_when_the_run_is_skipped(capsys):
    assert main(["perf", "speed", "--skip-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model" in err


@pytest.mark.parametrize("flag", [["--repeats", "0"], ["--train-images", "x"], ["--bogus"]])
def test_cli_bench_rejects_bad_flags(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["perf", "speed", *flag])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_speed_checks_the_model_before_measuring(tmp_path, monkeypatch):
    import osrkit.perf.speed as bench
    from osrkit.errors import ModelFormatError

    def not_reached(*a, **k):
        raise AssertionError("measured before checking --model")

    monkeypatch.setattr(bench, "mm_gflops", not_reached)
    with pytest.raises(ModelFormatError):
        speed(tmp_path, SpeedOptions(model=str(tmp_path / "missing"), run=False))


def test_cli_bench_refuses_no_fast(capsys):
    assert main(["--no-fast", "perf", "speed", "--skip-run", "--model", "x"]) == 2
    assert "--no-fast" in capsys.readouterr().err


def test_compiled_throughput_swaps_the_engine_networks_and_restores_them(fitted, monkeypatch):
    """--compile compiles the engine's networks (a bug once looked for an attribute the engine
    no longer has); torch.compile itself is replaced by a recorder to keep the test fast."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    engine = fitted.engine()
    before = (engine.classifier, engine.autoencoder)
    images = torch.from_numpy(synthetic_set(64).images.numpy())
    compile_s, rate = compiled_throughput(fitted, images)
    assert compiled == list(before) and compile_s > 0 and rate > 0
    assert (engine.classifier, engine.autoencoder) == before


def test_conventional_dataset_reads_colour_images():
    images = torch.randint(0, 256, (4, 3, 10, 12), dtype=torch.uint8)
    ds = ConventionalDataset(images, torch.arange(4), TrainConfig(rotation_degrees=0, hflip_prob=0))
    x, _ = ds[1]
    assert x.shape == (3, 10, 12)
    torch.testing.assert_close(x, images[1].float() / 255)
