"""The seed protocol's targets on the full data (slow: trains the default models, ~3 min).

Run with ``make test-slow`` or ``pytest -m slow``.
"""

import pytest

from osrkit.evaluation import ReportOptions
from osrkit.jobs.pipeline import JobData, run


@pytest.mark.slow
def test_default_run_meets_seed_targets(shared_data, tmp_path):
    m = run(tmp_path / "run", JobData(root=str(shared_data)), options=ReportOptions(embed_samples=500))
    assert m["counts"] == {"known": 10000, "unknown": 10000}
    assert m["closed_set_accuracy"] >= 0.993
    decision = m["scorers"][m["decision_scorer"]]  # the default rule for digits: fusion
    assert m["decision_scorer"] == "fusion"
    assert decision["auroc"] >= 0.999
    assert decision["fpr_at_95_tpr"] <= 0.005
    assert decision["macro_f1"] >= 0.97
    # thresholds set on the validation split accept ~95% of the unseen MNIST test digits
    assert abs(decision["known_accept_rate"] - 0.95) <= 0.01
    assert abs(m["scorers"]["msp"]["known_accept_rate"] - 0.95) <= 0.01
