"""Model health (``osrkit.recognizer.health``): each check on synthetic predictions and
histories, healthy and failing; then a useless model fitted through the public API."""

import json
import logging

import numpy as np
import pytest
import torch

from osrkit import ImageSet, OpenSetRecognizer
from osrkit.recognizer.fitting import FitReport
from osrkit.recognizer.health import (
    CHECKS,
    MIN_STEPS,
    ModelHealth,
    assess,
    assess_fit,
    binomial_tail,
    chance_accuracy,
    check_accuracy,
    check_optimizer_steps,
    check_predicted_classes,
    check_validation_curve,
)
from osrkit.training.config import TrainConfig
from tests.conftest import synthetic_digits


def balanced(n: int, k: int) -> np.ndarray:
    return np.arange(n) % k


def with_accuracy(labels: np.ndarray, k: int, correct: int) -> np.ndarray:
    """Predictions right on the first ``correct`` images, wrong (the next class) after."""
    predictions = labels.copy()
    predictions[correct:] = (labels[correct:] + 1) % k
    return predictions


# ---------------------------------------------------------------- accuracy against chance
def test_binomial_tail_matches_the_exact_sum():
    from math import comb

    n, p = 12, 1 / 3
    for k in (0, 1, 4, 9, 12, 13):
        exact = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_chance_is_the_larger_of_one_in_k_and_the_most_common_class():
    assert chance_accuracy(balanced(30, 3), 3) == pytest.approx(1 / 3)
    assert chance_accuracy(np.array([0] * 8 + [1, 2]), 3) == pytest.approx(0.8)


def test_accuracy_well_above_chance_is_healthy():
    labels = balanced(300, 3)
    assert check_accuracy(labels, labels, 3) is None
    assert check_accuracy(with_accuracy(labels, 3, 240), labels, 3) is None  # 0.8 against 1/3


def test_accuracy_at_chance_fails():
    """The issue's colour folder: three classes, accuracy 0.333."""
    labels = balanced(300, 3)
    finding = check_accuracy(with_accuracy(labels, 3, 100), labels, 3)
    assert finding is not None and finding.check == "accuracy"
    assert "0.333" in finding.message and "chance" in finding.message and "1 in 3 classes" in finding.message
    assert "--epochs" in finding.advice


def test_accuracy_barely_above_chance_fails_even_when_significant():
    labels = balanced(10_000, 10)
    predictions = with_accuracy(labels, 10, 2_000)  # 0.2: significant, but a fifth of the gap
    assert binomial_tail(2_000, 10_000, 0.1) < 1e-6
    assert check_accuracy(predictions, labels, 10) is not None


def test_accuracy_on_too_few_images_cannot_be_told_from_chance():
    labels = balanced(3, 3)
    finding = check_accuracy(labels, labels, 3)  # all three right: p = (1/3)^3 = 0.037
    assert finding is not None and "binomial test" in finding.message and "--val-size" in finding.advice


def test_always_answering_the_most_common_class_is_no_skill():
    labels = np.array([0] * 80 + [1] * 10 + [2] * 10)
    finding = check_accuracy(np.zeros(100, int), labels, 3)  # accuracy 0.8, well over 1/3
    assert finding is not None and "most common class" in finding.message


# ---------------------------------------------------------------- validation curve
@pytest.mark.parametrize(
    "errors",
    [
        [0.667, 0.55, 0.339],  # falls
        [0.05, 0.05, 0.05],  # good from the first epoch on, and holds
        [0.667],  # one epoch: no curve
    ],
)
def test_falling_or_already_good_curves_are_healthy(errors):
    assert check_validation_curve(errors, 3) is None


@pytest.mark.parametrize(
    "errors, trend",
    [
        ([0.667, 0.667, 0.667, 0.667, 0.667, 0.667], "flat"),  # the six flat epochs
        ([0.6, 0.65, 0.7], "rose"),
        ([0.6, 0.595, 0.6], "flat"),  # less than a point of improvement
    ],
)
def test_flat_or_rising_curves_fail(errors, trend):
    finding = check_validation_curve(errors, 3)
    assert finding is not None and finding.check == "validation_curve"
    assert trend in finding.message and f"{len(errors)} epochs" in finding.message


# ---------------------------------------------------------------- optimizer steps
def test_enough_steps_are_healthy():
    assert check_optimizer_steps(MIN_STEPS, [0.5, 0.3]) is None
    assert check_optimizer_steps(None) is None  # nothing trained


def test_few_steps_fail_while_the_error_was_still_falling():
    finding = check_optimizer_steps(12, [0.6, 0.4])
    assert finding is not None and "12 optimizer steps" in finding.message and "--epochs" in finding.advice
    assert check_optimizer_steps(12) is not None  # no curve known


def test_few_steps_are_enough_once_the_error_levelled_off_or_is_gone():
    assert check_optimizer_steps(40, [0.5, 0.1, 0.12]) is None  # best before the last epoch
    assert check_optimizer_steps(40, [0.6, 0.6, 0.6]) is None  # flat: the curve check says so
    assert check_optimizer_steps(40, [0.5, 0.0 + 1e-6]) is None  # no error left (the loss breaks ties)


# ---------------------------------------------------------------- classes predicted
def test_every_class_predicted_is_healthy():
    labels = balanced(30, 3)
    assert check_predicted_classes(with_accuracy(labels, 3, 10), labels, ["a", "b", "c"]) is None


def test_classes_never_predicted_are_named():
    labels = balanced(30, 3)
    finding = check_predicted_classes(np.zeros(30, int), labels, ["cat", "dog", "frog"])
    assert finding is not None and "2 of 3 classes" in finding.message
    assert finding.message.endswith("dog, frog")


def test_a_class_without_validation_images_is_not_blamed():
    labels = np.array([0, 1, 0, 1])  # class 2 has no validation image
    assert check_predicted_classes(labels, labels, ["a", "b", "c"]) is None


def test_long_lists_of_classes_are_cut_short():
    k = 25
    finding = check_predicted_classes(np.zeros(k, int), balanced(k, k), [f"c{i}" for i in range(k)])
    assert finding is not None and "and 14 more" in finding.message


# ---------------------------------------------------------------- the whole assessment
def test_a_healthy_assessment_is_ok_with_no_warnings():
    labels = balanced(300, 3)
    health = assess(labels, labels, ["a", "b", "c"], [0.5, 0.2, 0.05], 400)
    assert health.ok and health.findings == ()
    assert health.checked == CHECKS
    d = health.to_dict()
    assert d["ok"] is True and d["warnings"] == []
    assert d["measured"]["validation_accuracy"] == 1.0 and d["measured"]["optimizer_steps"] == 400


def test_an_assessment_without_training_runs_only_the_prediction_checks():
    labels = balanced(300, 3)
    health = assess(labels, torch.from_numpy(labels), ["a", "b", "c"])
    assert health.ok and health.checked == ("accuracy", "predicted_classes")


def test_findings_survive_json_and_log_one_line_each(caplog):
    labels = balanced(300, 3)
    health = assess(np.zeros(300, int), labels, ["a", "b", "c"], [0.667, 0.667, 0.66], 30)
    assert not health.ok
    assert [f.check for f in health.findings] == list(CHECKS)
    again = ModelHealth.from_dict(json.loads(json.dumps(health.to_dict())))
    assert again == health
    with caplog.at_level(logging.WARNING, logger="osrkit.recognizer.health"):
        health.log_warnings()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("\n" not in line and "try:" in line for line in lines)


def test_assess_fit_reads_the_curve_and_counts_the_steps():
    curve = (0.667, 0.667, 0.66)
    history = [{"epoch": e + 1, "train_loss": 1.0, "val_metric": m} for e, m in enumerate(curve)]
    report = FitReport(100, 30, {"best_epoch": 1, "best_val_metric": 0.667, "history": history}, None)
    labels = balanced(30, 3)
    health = assess_fit(labels, labels, ["a", "b", "c"], report, TrainConfig(batch_size=32))
    assert health.measured["optimizer_steps"] == 3 * 4  # ceil(100 / 32) batches an epoch
    assert {f.check for f in health.findings} == {"validation_curve", "optimizer_steps"}
    wrapped = assess_fit(labels, labels, ["a", "b", "c"], FitReport(100, 30, None, None), None)
    assert wrapped.checked == ("accuracy", "predicted_classes")


# ---------------------------------------------------------------- through the public API
def tiny_model(data: ImageSet) -> OpenSetRecognizer:
    """A small network and one scorer: seconds to fit."""
    return OpenSetRecognizer(
        data.class_names,
        decision_scorer="msp",
        scorers=["msp"],
        autoencoder=False,
        backbone_options={"channels": [8, 8, 16], "feature_dim": 32},
    )


@pytest.fixture(scope="module")
def useless(tmp_path_factory):
    """The issue's useless model, cheaply: three classes whose labels are random, so that
    nothing can be learned, a few epochs on a few hundred images."""
    images, _ = synthetic_digits(240, num_classes=3)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 3, 240))
    data = ImageSet(torch.from_numpy(images), labels, ["cat", "dog", "frog"], "random labels")
    return tiny_model(data).fit(data, {"epochs": 3, "batch_size": 32, "val_size": 90, "lr": 1e-3})


def test_a_model_that_learned_nothing_says_so(useless, tmp_path):
    health = useless.health_
    assert not health.ok
    assert "accuracy" in {f.check for f in health.findings}
    assert health.measured["validation_accuracy"] < 0.5 <= 1.5 * health.measured["chance_accuracy"]
    folder = useless.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["health"]["ok"] is False
    assert OpenSetRecognizer.from_pretrained(folder).health_ == health


def test_fit_logs_one_warning_per_failing_check(caplog):
    images, labels = synthetic_digits(120, num_classes=3)
    data = ImageSet(torch.from_numpy(images), torch.from_numpy(labels[::-1].copy()), ["a", "b", "c"], "x")
    with caplog.at_level(logging.WARNING, logger="osrkit.recognizer.health"):
        model = tiny_model(data).fit(data, {"epochs": 1, "batch_size": 32, "val_size": 30})
    lines = [r.getMessage() for r in caplog.records if r.name == "osrkit.recognizer.health"]
    assert len(lines) == len(model.health_.findings) >= 1  # one epoch of 3 steps at the least
    assert all(line.startswith("model health: ") for line in lines)
