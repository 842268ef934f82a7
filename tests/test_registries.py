"""The three registries (backbones, scorers, protocols) share one shape and one rule:
``register_x`` refuses a name already taken unless ``replace=True``, ``list_x()`` is
sorted, an unknown name is one line naming the known ones, ``create_x`` builds one."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import osrkit
from osrkit.data.spec import MNIST_SPEC
from osrkit.errors import ConfigError
from osrkit.models import (
    BACKBONES,
    Backbone,
    backbone_entry,
    create_backbone,
    list_backbones,
    register_backbone,
)
from osrkit.protocols import (
    PROTOCOLS,
    Context,
    create_protocol,
    group_names,
    list_protocols,
    protocol_entry,
    register_protocol,
)
from osrkit.registry import Registry
from osrkit.scorers import (
    SCORERS,
    MSPScorer,
    Scorer,
    create_scorer,
    list_scorers,
    make_scorer,
    register_scorer,
    scorer_class,
    scorer_entry,
)
from osrkit.scorers.selection import report_order


class Tiny(Backbone):
    def __init__(self, spec, num_classes):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.feature_dim = spec.channels
        self.head = torch.nn.Linear(spec.channels, num_classes)

    def forward_features(self, x):
        return self.body(x)


def _protocol(ctx: Context) -> dict:
    """A protocol of the registry tests."""
    return {"decision_scorer": "msp", "targets": ["target test: 1 (goal 1) ok"]}


@dataclass
class Kind:
    """One registry through its public functions: ``register(name, replace)`` adds a new
    entry (a different one at each call), ``create(name)`` builds what it names."""

    name: str
    registry: Registry
    register: Callable[[str, bool], Any]
    list: Callable[[], list[str]]
    entry: Callable[[str], Any]
    create: Callable[[str], Any]


def _scorer(name: str, replace: bool) -> type[Scorer]:
    return register_scorer(type("TestScorer", (MSPScorer,), {"name": name}), replace=replace)


KINDS = {
    "backbone": Kind(
        "backbone",
        BACKBONES,
        lambda name, replace: register_backbone(name, lambda s, k: Tiny(s, k), replace=replace),
        list_backbones,
        backbone_entry,
        lambda name: create_backbone(name, MNIST_SPEC, 3),
    ),
    "scorer": Kind("scorer", SCORERS, _scorer, list_scorers, scorer_entry, create_scorer),
    "protocol": Kind(
        "protocol",
        PROTOCOLS,
        lambda name, replace: register_protocol(name, "test", replace=replace)(_protocol),
        list_protocols,
        protocol_entry,
        create_protocol,
    ),
}


@pytest.fixture(params=list(KINDS))
def kind(request, monkeypatch) -> Kind:
    """A registry whose test entries are dropped afterwards."""
    k = KINDS[request.param]
    monkeypatch.setattr(k.registry, "_entries", dict(k.registry._entries))
    return k


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_name_taken_is_refused_unless_replace(kind):
    kind.register("test_taken", False)
    first = kind.entry("test_taken")
    with pytest.raises(ConfigError) as exc:
        kind.register("test_taken", False)
    assert f"a {kind.name} named 'test_taken' is already registered" in _one_line(exc)
    assert kind.entry("test_taken") is first
    kind.register("test_taken", True)
    assert kind.entry("test_taken") is not first


def test_names_are_listed_sorted(kind):
    kind.register("zz_test_last", False)
    kind.register("aa_test_first", False)
    names = kind.list()
    assert names == sorted(names) == list(kind.registry)
    assert names[0] == "aa_test_first" and names[-1] == "zz_test_last"


def test_an_unknown_name_is_one_line_naming_the_known_ones(kind):
    with pytest.raises(ConfigError) as exc:
        kind.entry("nope")
    known = ", ".join(kind.list())
    assert _one_line(exc).startswith(f"unknown {kind.name} 'nope'; registered {kind.name}s: {known}")
    with pytest.raises(ConfigError, match=f"unknown {kind.name} 'nope'"):
        kind.create("nope")


def test_create_builds_a_registered_entry(kind, tmp_path):
    kind.register("test_made", False)
    made = kind.create("test_made")
    if kind.name == "backbone":
        assert isinstance(made, Backbone) and made.backbone_name == "test_made"
        assert made(torch.zeros(2, *MNIST_SPEC.shape)).shape == (2, 3)
    elif kind.name == "scorer":
        assert isinstance(made, MSPScorer) and made.name == "test_made"
    else:
        result = made(Context(tmp_path))
        assert result["protocol"] == "test_made" and (tmp_path / "test_made.md").is_file()


def test_make_scorer_is_deprecated_for_create_scorer():
    with pytest.warns(DeprecationWarning, match="create_scorer"):
        scorer = make_scorer("knn", k=3)
    assert scorer.get_params() == create_scorer("knn", k=3).get_params()
    assert osrkit.make_scorer is make_scorer and osrkit.create_scorer is create_scorer
    assert scorer_class is scorer_entry  # the older name, kept


def test_outputs_keep_their_declared_order():
    """Reports list scorers, and groups run protocols, in a declared order, not the
    registries' sorted one; a scorer registered elsewhere comes after the declared ones."""
    assert report_order() == [
        *("msp", "max_logit", "energy", "mahalanobis", "knn", "vim", "react"),
        *("reconstruction", "class_reconstruction", "combined", "fusion", "fusion_recon", "max_logit_knn"),
    ]
    assert report_order(["knn", "aa_new", "msp"]) == ["msp", "knn", "aa_new"]
    assert group_names() == {
        "all": [
            *("seed", "mnist-splits", "crosr", "near-far", "cifar10-splits", "cifar10-splits-pretrained"),
            *("cifar10-far", "cifar10-far-pretrained", "cifar10-train-speed"),
        ],
        "mnist": ["seed", "mnist-splits", "crosr", "near-far"],
        "cifar10": ["cifar10-splits", "cifar10-far", "cifar10-train-speed"],
        "cifar10-pretrained": ["cifar10-splits-pretrained", "cifar10-far-pretrained"],
    }


@pytest.mark.parametrize("name", list_protocols())
def test_every_protocol_runs_in_a_group_and_heads_its_report(name):
    entry = protocol_entry(name)
    assert name in group_names()["all"] and name in group_names()[entry.group]
    assert inspect.getdoc(entry.run)
