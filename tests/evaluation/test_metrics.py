import numpy as np
import pytest

from osrkit.errors import ConfigError
from osrkit.evaluation.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    closed_set_accuracy,
    fpr_at_tpr,
    open_set_metrics,
    oscr,
)


def test_perfect_and_reversed_separation():
    known, unknown = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8])
    assert auroc(known, unknown) == 1.0
    assert aupr_in(known, unknown) == 1.0
    assert aupr_out(known, unknown) == 1.0
    assert fpr_at_tpr(known, unknown) == 0.0
    assert auroc(unknown, known) == 0.0


def test_auroc_hand_case():
    # pairs (k, u): 0.2<0.3 ok, 0.2<0.5 ok, 0.4>0.3 wrong, 0.4<0.5 ok -> 3/4
    assert auroc(np.array([0.2, 0.4]), np.array([0.3, 0.5])) == 0.75


def test_fpr_at_95_tpr_hand_case():
    known = np.arange(100, dtype=float)  # accepting 95 knowns needs threshold 94
    unknown = np.array([10.0, 93.5, 94.0, 94.5, 200.0])
    # unknowns accepted at t=94 (score <= 94): 10, 93.5, 94 -> 3 of 5
    assert fpr_at_tpr(known, unknown, 0.95) == pytest.approx(0.6)


def test_oscr_hand_case():
    # knowns: scores 1, 2, 3 with correct = T, F, T; unknowns: 1.5, 4
    # sweep: accept 1 (k, correct): CCR 1/3, FPR 0 ; accept 1.5 (u): FPR 1/2 ;
    # accept 2 (k, wrong): CCR stays ; accept 3 (k correct): CCR 2/3 ; accept 4 (u): FPR 1.
    # area = 1/3 * 1/2 (FPR 0 -> 1/2) + 2/3 * 1/2 (FPR 1/2 -> 1) = 1/2
    value = oscr(np.array([1.0, 2.0, 3.0]), np.array([1.5, 4.0]), np.array([True, False, True]))
    assert value == pytest.approx(0.5)


def test_oscr_perfect_equals_accuracy():
    known = np.array([0.1, 0.2, 0.3, 0.4])
    correct = np.array([True, True, True, False])
    assert oscr(known, np.array([0.9, 0.95]), correct) == pytest.approx(0.75)


def test_oscr_ties_are_a_straight_segment():
    # all scores tied: single jump from (0, 0) to (1, CCR) -> triangle area CCR / 2
    assert oscr(np.ones(2), np.ones(2), np.array([True, True])) == pytest.approx(0.5)


def test_macro_f1_and_rates_hand_case():
    # K = 2 known classes; label 2 = unknown
    known_scores = np.array([0.1, 0.1, 0.9, 0.1])
    known_labels = np.array([0, 1, 1, 0])
    known_preds = np.array([0, 1, 1, 1])  # last one misclassified
    unknown_scores = np.array([0.8, 0.2])
    unknown_preds = np.array([0, 0])
    m = open_set_metrics(
        known_scores, unknown_scores, known_labels, known_preds, unknown_preds, threshold=0.5, num_classes=2
    )
    # predictions: knowns -> [0, 1, 2, 1]; unknowns -> [2, 0]
    # true         [0, 1, 1, 0, 2, 2]
    # pred         [0, 1, 2, 1, 2, 0]
    # class 0: tp1 fp1 fn1 -> f1 .5 ; class 1: tp1 fp1 fn1 -> .5 ; unknown: tp1 fp1 fn1 -> .5
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["known_accept_rate"] == pytest.approx(0.75)
    assert m["unknown_reject_rate"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    for key in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "oscr"):
        assert 0.0 <= m[key] <= 1.0


def test_closed_set_accuracy():
    assert closed_set_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def test_metrics_refuse_empty_and_nan():
    with pytest.raises(ConfigError):
        auroc(np.array([]), np.array([1.0]))
    with pytest.raises(ConfigError, match="NaN"):
        auroc(np.array([np.nan]), np.array([1.0]))
