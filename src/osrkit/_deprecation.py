"""Old names kept for one release after a rename: a module's ``__getattr__`` that returns
the new object under the old name and warns with ``DeprecationWarning``."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping

REMOVED_IN = "0.3"  # the release that drops the names renamed in this one


def renamed(module: str, old_to_new: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``module`` (pass ``__name__``): an old name in
    ``old_to_new`` gives the module's object of the new name, with a ``DeprecationWarning``
    naming the new one; any other missing name raises ``AttributeError`` as usual.

    Use: ``__getattr__ = renamed(__name__, {"OldName": "NewName"})``.
    """

    def __getattr__(name: str) -> object:
        new = old_to_new.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is renamed {new}; the old name goes in osrkit {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(sys.modules[module], new)

    return __getattr__
