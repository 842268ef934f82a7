"""Where datasets live: ``--data-root``, else ``$OSRKIT_DATA``, else ``./data``, else ``../shared/data``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from osrkit.errors import DataError

log = logging.getLogger(__name__)

ENV_VAR = "OSRKIT_DATA"


def candidate_roots(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data folders osrkit looks in, in order of preference."""
    if explicit is not None:
        return [Path(explicit)]
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    return [Path("data"), Path("..") / "shared" / "data"]


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data root to use.

    An explicit path or ``$OSRKIT_DATA`` is used as given (it must exist). Otherwise
    ``./data`` is used when it exists, then ``../shared/data``; if neither exists,
    ``./data`` is returned so that downloads have a place to go.
    """
    roots = candidate_roots(explicit)
    if explicit is not None or os.environ.get(ENV_VAR):
        root = roots[0]
        if not root.is_dir():
            source = "--data-root" if explicit is not None else f"${ENV_VAR}"
            raise DataError(f"data root {root} (from {source}) is not a folder; point it at your datasets")
        return root
    for root in roots:
        if root.is_dir():
            log.debug("using data root %s", root)
            return root
    return roots[0]
