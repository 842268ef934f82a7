"""The protocol registry: ``register_protocol``, ``list_protocols``, ``protocol_entry``
(and ``create_protocol`` in ``osrkit.protocols``), the shape of every osrkit registry
(``osrkit.registry``). ``osrkit protocol NAME`` runs the protocol ``NAME``.

A protocol is a function ``(Context) -> dict`` registered with ``register_protocol``;
its docstring's first paragraph heads its report, and an optional ``compare`` function
renders the published numbers beside ours. ``group_names`` names sets of protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from osrkit.protocols.context import Context
from osrkit.registry import Registry, in_declared_order

Run = Callable[[Context], dict]


@dataclass(frozen=True)
class ProtocolEntry:
    run: Run
    group: str  # "mnist" or "cifar10"
    compare: Callable[[dict], list[str]] | None = None  # published numbers beside ours
    published_metric: str = ""


# Every protocol by name, iterated sorted.
PROTOCOLS: Registry[ProtocolEntry] = Registry("protocol")

# The order in which a group runs its protocols (and the CLI lists them): the digit ones,
# then the colour ones, each pretrained variant after its from-scratch protocol. Protocols
# registered elsewhere follow, sorted.
RUN_ORDER = (
    "seed",
    "mnist-splits",
    "crosr",
    "near-far",
    "cifar10-splits",
    "cifar10-splits-pretrained",
    "cifar10-far",
    "cifar10-far-pretrained",
    "cifar10-train-speed",
)


def register_protocol(
    name: str,
    group: str,
    compare: Callable[[dict], list[str]] | None = None,
    published_metric: str = "",
    *,
    replace: bool = False,
) -> Callable[[Run], Run]:
    """Decorator: register ``run(ctx) -> dict`` as protocol ``name`` of ``group``; a name
    already registered is refused unless ``replace=True``."""

    def decorate(run: Run) -> Run:
        PROTOCOLS.register(name, ProtocolEntry(run, group, compare, published_metric), replace=replace)
        return run

    return decorate


def list_protocols() -> list[str]:
    """The registered protocol names, sorted (``group_names`` gives them in run order)."""
    return PROTOCOLS.names()


def protocol_entry(name: str) -> ProtocolEntry:
    """The registry entry of ``name``; one line naming the registered ones otherwise."""
    return PROTOCOLS.entry(name)


def group_names() -> dict[str, list[str]]:
    """``all`` and each group, with their protocols in ``RUN_ORDER``."""
    names = in_declared_order(PROTOCOLS, RUN_ORDER)
    groups: dict[str, list[str]] = {"all": names}
    for name in names:
        groups.setdefault(PROTOCOLS[name].group, []).append(name)
    return groups
