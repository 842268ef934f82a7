import numpy as np
import pytest

from osrkit.errors import ConfigError
from osrkit.scorers.calibration import accept_rate, joint_thresholds, threshold_at_accept_rate


@pytest.mark.parametrize("rate", [0.8, 0.9, 0.95, 0.99])
def test_threshold_accepts_requested_fraction_of_held_out_knowns(rate):
    rng = np.random.default_rng(0)
    calib, held_out = rng.lognormal(size=5000), rng.lognormal(size=20000)
    t = threshold_at_accept_rate(calib, rate)
    assert accept_rate(calib, t) >= rate
    assert accept_rate(calib, t) < rate + 1 / 5000 + 1e-12
    assert abs(accept_rate(held_out, t) - rate) <= 0.01


def test_threshold_small_hand_case():
    assert threshold_at_accept_rate(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 0.6) == 3.0
    assert threshold_at_accept_rate(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 1.0) == 5.0


@pytest.mark.parametrize("rate", [0.9, 0.95])
def test_joint_thresholds_or_rule_accepts_requested_fraction(rate):
    rng = np.random.default_rng(1)
    cov = [[1.0, 0.5], [0.5, 1.0]]
    calib = np.exp(rng.multivariate_normal([0, 0], cov, size=5000))
    held = np.exp(rng.multivariate_normal([0, 0], cov, size=20000))
    t = joint_thresholds(calib, rate)
    accepted = lambda s: np.mean((s <= t).all(axis=1))  # noqa: E731
    assert accepted(calib) >= rate
    assert accepted(calib) < rate + 0.002
    assert abs(accepted(held) - rate) <= 0.01
    # the rejection budget is shared: both members sit at the same quantile
    q = [np.mean(calib[:, j] <= t[j]) for j in range(2)]
    assert abs(q[0] - q[1]) < 0.002
    assert min(q) > rate  # each alone accepts more than the OR does


def test_joint_thresholds_single_column_matches_threshold():
    s = np.random.default_rng(2).random(1000)
    assert joint_thresholds(s[:, None], 0.95)[0] == threshold_at_accept_rate(s, 0.95)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_bad_accept_rate(bad):
    with pytest.raises(ConfigError, match="accept rate"):
        threshold_at_accept_rate(np.ones(10), bad)


def test_nan_scores_refused():
    with pytest.raises(ConfigError, match="NaN"):
        threshold_at_accept_rate(np.array([0.1, np.nan]), 0.9)
    with pytest.raises(ConfigError, match="zero"):
        threshold_at_accept_rate(np.array([]), 0.9)
