"""The command line's log: what the library logs (``logging``), one line each on stderr.

At the default level (INFO) a command says what it found and did: the data (images,
classes, image size), the training recipe, the validation split, each epoch's labelled
metrics. ``-q`` leaves warnings and errors only; ``-v`` adds the debug details, each line
then with its level and logger. Under torchrun the ranks other than 0 log warnings only
(rank 0 speaks for all), unless ``-v`` is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from osrkit.hardware import launched

VERBOSE_FORMAT = "%(levelname)s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """``osrkit: message`` for information, ``osrkit: warning: message`` for warnings and
    errors (as the CLI's own one-line errors read); another library's records carry its
    logger's name instead of ``osrkit``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        source = "osrkit" if record.name.partition(".")[0] == "osrkit" else record.name
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{source}: {level}{text}"


def log_level(verbose: bool, quiet: bool) -> int:
    """The level of osrkit's loggers for ``-v`` (DEBUG: it wins over ``-q``, which still
    hides the progress bars), ``-q`` (WARNING) or neither (INFO)."""
    if verbose:
        return logging.DEBUG
    if quiet or (launched() and os.environ.get("RANK", "0") not in ("", "0")):
        return logging.WARNING
    return logging.INFO


@contextlib.contextmanager
def cli_logging(level: int) -> Iterator[None]:
    """osrkit's loggers at ``level`` while the command runs, printed on stderr unless the
    caller (``main()`` called from Python, pytest) has configured logging already; both
    are as they were afterwards."""
    package, root = logging.getLogger("osrkit"), logging.getLogger()
    saved = package.level
    handler = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(VERBOSE_FORMAT) if level < logging.INFO else LineFormatter())
        root.addHandler(handler)  # other libraries' warnings too, at the root's level (WARNING)
    package.setLevel(level)
    try:
        yield
    finally:
        package.setLevel(saved)
        if handler is not None:
            root.removeHandler(handler)
