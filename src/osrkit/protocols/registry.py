"""The protocol registry: ``osrkit protocol NAME`` runs ``PROTOCOLS[NAME]``.

A protocol is a function ``(Context) -> dict`` registered with ``register_protocol``;
its docstring's first paragraph heads its report, and an optional ``compare`` function
renders the published numbers beside ours. ``GROUPS`` name sets of protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from osrkit.protocols.context import Context

Run = Callable[[Context], dict]


@dataclass(frozen=True)
class ProtocolEntry:
    run: Run
    group: str  # "mnist" or "cifar10"
    compare: Callable[[dict], list[str]] | None = None  # published numbers beside ours
    published_metric: str = ""


PROTOCOLS: dict[str, ProtocolEntry] = {}


def register_protocol(
    name: str, group: str, compare: Callable[[dict], list[str]] | None = None, published_metric: str = ""
) -> Callable[[Run], Run]:
    def decorate(run: Run) -> Run:
        PROTOCOLS[name] = ProtocolEntry(run, group, compare, published_metric)
        return run

    return decorate


def group_names() -> dict[str, list[str]]:
    """``all`` and each group, with their protocols in registration order."""
    groups: dict[str, list[str]] = {"all": list(PROTOCOLS)}
    for name, entry in PROTOCOLS.items():
        groups.setdefault(entry.group, []).append(name)
    return groups
