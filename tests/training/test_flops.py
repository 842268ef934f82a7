"""The FLOP counter against a hand count, and the epochs a budget buys."""

import pytest
import torch
from torch import nn

from osrkit.training.flops import epochs_for_budget, training_flops


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_training_flops_match_a_hand_count():
    """A 3x3 convolution 3 -> 8 on 8x8 and a linear layer 512 -> 10, per image, 2 FLOPs a
    multiply-add: the convolution forward (2 * 512 outputs * 27) and its weight gradient
    (the input takes none); the linear layer forward, input gradient and weight gradient."""
    conv = 2 * (8 * 8 * 8) * (3 * 3 * 3)
    linear = 2 * 512 * 10
    assert training_flops(small_net(), (3, 8, 8)) == 2 * conv + 3 * linear


def test_a_frozen_layer_takes_no_weight_gradient():
    net = small_net()
    net[0].weight.requires_grad_(False)
    conv = 2 * (8 * 8 * 8) * (3 * 3 * 3)
    # the frozen convolution runs forward only, and nothing before the linear layer wants
    # its input gradient: the linear layer's forward and weight gradient
    assert training_flops(net, (3, 8, 8)) == conv + 2 * (2 * 512 * 10)


def test_counting_leaves_the_network_alone():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    training_flops(net, (3, 8, 8))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize(("budget_images", "epochs"), [(2.5, 2), (1.0, 1), (0.2, 1), (10.0, 10)])
def test_epochs_for_budget_are_the_whole_epochs_that_fit(budget_images, epochs):
    per_image = training_flops(small_net(), (3, 8, 8))
    budget = budget_images * per_image * 1000 / 1e15  # budget_images epochs of 1,000 images
    assert epochs_for_budget(small_net(), budget, 1000, (3, 8, 8)) == epochs
