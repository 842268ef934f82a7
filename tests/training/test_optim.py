"""The SGD schedule's ends and the budget's validation."""

import pytest
from torch import nn

from osrkit.errors import ConfigError
from osrkit.training.config import TrainConfig
from osrkit.training.optim import make_optimizer


@pytest.mark.parametrize("lr_end", [0.0, 0.07])
def test_sgd_schedule_starts_at_a_fifth_peaks_then_ends_at_lr_end(lr_end):
    cfg = TrainConfig(optimizer="sgd", lr=1.0, warmup=0.25, lr_end=lr_end)
    net = nn.Linear(3, 2)
    opt, sched = make_optimizer(net, cfg.lr, 100, cfg, "sgd")
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) in (24, 25)
    assert lrs[-1] == pytest.approx(lr_end, abs=1e-6)  # the last step's


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), True, "big"])
def test_a_budget_must_be_a_positive_number(budget):
    with pytest.raises(ConfigError, match="budget must be a positive number of PFLOP"):
        TrainConfig(budget_pflop=budget)


def test_lr_end_must_be_a_fraction():
    with pytest.raises(ConfigError, match="lr-end must be a fraction"):
        TrainConfig(lr_end=1.5)
