"""The one registry shape of backbones, scorers and protocols.

A ``Registry`` maps names to entries under one rule: registering a name already taken is
a one-line ``ConfigError`` unless ``replace=True`` (registering the very same entry again
is a no-op), names are listed sorted, and an unknown name is a one-line ``ConfigError``
naming the registered ones. It is a read-only ``Mapping`` iterated in that sorted order.
Each kind wraps it as ``register_x`` / ``list_x`` / ``x_entry`` / ``create_x``. Outputs
whose order is fixed (report columns, the protocols a group runs) declare that order and
use ``in_declared_order``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from osrkit.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Entries of one ``kind`` ("backbone", "scorer", ...) by name; ``hint`` ends the
    unknown-name message (how to register one)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; a name already taken by another entry is refused
        unless ``replace``. Returns ``entry``."""
        if not name:
            raise ConfigError(f"a {self.kind} needs a name")
        old = self._entries.get(name)
        if old is not None and old is not entry and not replace:
            raise ConfigError(
                f"a {self.kind} named {name!r} is already registered; pass replace=True to replace it"
            )
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> T:
        """The entry of ``name``; one line naming the registered ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}{self.hint}"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def in_declared_order(names: Iterable[str], declared: Sequence[str]) -> list[str]:
    """``names`` in the order of ``declared``, any others after them, sorted."""
    rank = {name: i for i, name in enumerate(declared)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
