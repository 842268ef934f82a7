"""Your own trained classifier, post hoc: OpenSetRecognizer.from_classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import osrkit
from osrkit import InputSpec, OpenSetRecognizer, TrainConfig
from osrkit.errors import ConfigError, ModelFormatError
from osrkit.models import wrap_classifier
from osrkit.models.registry import BACKBONES
from tests.models.test_backbones import _colour_set

SPEC = InputSpec(3, 16, 16, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))


class UserNet(nn.Module):
    """A user's own classifier, trained outside osrkit."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.embed = nn.Linear(32, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.embed(self.conv(x))))


def _trained_user_net() -> UserNet:
    torch.manual_seed(0)
    net = UserNet()
    data = _colour_set(300)
    x = (data.as_float() - 0.2) / 0.3  # the user's normalisation
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = nn.functional.cross_entropy(net(x), data.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def user_net() -> UserNet:
    return _trained_user_net()


def test_from_classifier_trains_nothing_and_saves(tmp_path, user_net):
    before = {k: v.clone() for k, v in user_net.state_dict().items()}
    # the architecture is registered under a name, so a model folder can rebuild it
    osrkit.register_backbone(
        "user_net",
        lambda spec, num_classes, **o: wrap_classifier(UserNet(num_classes), spec, num_classes, **o),
    )
    model = OpenSetRecognizer.from_classifier(
        user_net, SPEC, ["red", "green", "blue"], features="embed", backbone="user_net", device="cpu"
    )
    train = _colour_set(300)
    assert model.fit(train, TrainConfig(val_size=60)) is model
    for k, v in user_net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert model.decision_scorer_ == "max_logit" and not model.has_autoencoder
    assert list(model.scorers_) == ["msp", "max_logit", "energy", "knn"]  # the default set
    assert "reconstruction" not in model.scorers_
    # the wrapped network gives its own logits: normalisation applied inside
    test = _colour_set(60, seed=2)
    with torch.no_grad():
        direct = user_net((test.as_float() - 0.2) / 0.3).argmax(1).numpy()
    out = model.outputs(test)
    np.testing.assert_array_equal(out.predictions, direct)
    assert out.features.shape == (60, 16)
    # saving records the architecture by that name; loading rebuilds it from the registry
    try:
        model.save_pretrained(tmp_path / "m")
        again = OpenSetRecognizer.from_pretrained(tmp_path / "m", device="cpu")
        for name, s in model.score_all(test).items():
            np.testing.assert_array_equal(again.score_all(test)[name], s)
    finally:
        BACKBONES._entries.pop("user_net")
    with pytest.raises(ModelFormatError, match="uses backbone 'user_net'"):
        OpenSetRecognizer.from_pretrained(tmp_path / "m")


def test_from_classifier_checks(user_net):
    with pytest.raises(ConfigError, match="no layer 'nope'; its layers include conv"):
        OpenSetRecognizer.from_classifier(user_net, SPEC, ["a", "b", "c"], features="nope")
    with pytest.raises(ConfigError, match="gives 3 logits but 2 class names"):
        OpenSetRecognizer.from_classifier(user_net, SPEC, ["a", "b"], features="embed")
    with pytest.raises(ConfigError, match="failed on a 1x16x16"):
        OpenSetRecognizer.from_classifier(user_net, InputSpec(1, 16, 16), ["a", "b", "c"], features="embed")
    model = OpenSetRecognizer.from_classifier(user_net, SPEC, ["red", "green", "blue"], features="embed")
    model.fit(_colour_set(300), TrainConfig(val_size=60))
    with pytest.raises(ConfigError, match="name the registered backbone"):
        model.save_pretrained("/nonexistent/never-written")


def test_callable_features(user_net):
    model = OpenSetRecognizer.from_classifier(
        user_net, SPEC, ["red", "green", "blue"], features=lambda x: user_net.conv(x)
    )
    model.fit(_colour_set(300), TrainConfig(val_size=60))
    assert model.outputs(_colour_set(10)).features.shape == (10, 32)


def test_efficientnet_lite0_wrapped():
    pytest.importorskip("efficientnet_lite_pytorch")
    from osrkit.models.pretrained import EFFICIENTNET_SPEC, efficientnet_lite0_network

    net = efficientnet_lite0_network(3, pretrained=True)
    model = OpenSetRecognizer.from_classifier(
        net,
        EFFICIENTNET_SPEC,
        ["red", "green", "blue"],
        features="_avg_pooling",
        backbone="efficientnet_lite0",
    )
    model.fit(_colour_set(90), TrainConfig(val_size=30))
    assert model.outputs(_colour_set(4)).features.shape == (4, 1280)


def test_wrapping_leaves_the_users_network_as_it_was(user_net):
    """The feature hook lives for one pass: wrapping twice and using the network directly
    afterwards leaves no hook behind and keeps nothing alive."""
    for _ in range(2):
        model = OpenSetRecognizer.from_classifier(user_net, SPEC, ["red", "green", "blue"], features="embed")
        model.outputs(_colour_set(4))
    assert not user_net.embed._forward_hooks
    with torch.no_grad():
        user_net(torch.rand(2, 3, 16, 16))
    assert not user_net.embed._forward_hooks
