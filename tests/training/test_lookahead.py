"""Lookahead averaging: when it starts, how it blends, and that it resumes."""

import torch
from torch import nn

from osrkit.training import lookahead as la


def test_nothing_happens_before_the_start_then_the_average_is_written_back():
    net = nn.Linear(2, 1)
    avg = la.Lookahead(net, total_steps=100)
    early = int(la.START * 100) - 1
    avg.step(early)
    assert avg.average is None
    first = (la.START * 100 // la.EVERY + 1) * la.EVERY  # the first averaging step
    avg.step(int(first))
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)  # the optimizer moves the network
    step = int(first) + la.EVERY
    avg.step(step)
    decay = la.BASE_DECAY**la.EVERY * (step / 100) ** la.POWER
    expected = start + (1 - decay) * 1.0
    torch.testing.assert_close(net.weight.detach(), expected)  # the network takes the average
    with torch.no_grad():
        net.weight.add_(1.0)
    avg.end_epoch()  # back to the average, unchanged
    torch.testing.assert_close(net.weight.detach(), expected)


def test_steps_between_the_every_nth_do_nothing():
    net = nn.Linear(2, 1)
    avg = la.Lookahead(net, total_steps=10)
    avg.step(5)
    avg.step(6)
    assert avg.average is not None
    with torch.no_grad():
        net.weight.add_(1.0)
    moved = net.weight.detach().clone()
    avg.step(7)
    torch.testing.assert_close(net.weight.detach(), moved)


def test_state_round_trips_for_resumed_training():
    net = nn.Linear(2, 1)
    avg = la.Lookahead(net, total_steps=10)
    avg.step(5)
    again = la.Lookahead(net, total_steps=10)
    again.load_state_dict(avg.state_dict())
    assert again.average is not None and again.average.keys() == avg.average.keys()
    assert la.Lookahead(net, 10).state_dict() == {"average": None}
