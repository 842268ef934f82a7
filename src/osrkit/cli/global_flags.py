"""The flags every subcommand takes, before or after its name: ``-v``, ``-q``, ``--no-fast``."""

from __future__ import annotations

import argparse

from osrkit.cli.arguments import _add_fast_arg


def add_global_flags(p: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v``, ``-q`` and ``--no-fast``: on the top-level parser with their defaults; on a
    subcommand (where it lacks them) with a suppressed default, so that they set the global
    value only when given there."""
    taken = {s for a in p._actions for s in a.option_strings}
    default = {} if top else {"default": argparse.SUPPRESS}
    if "-v" not in taken:
        p.add_argument("-v", "--verbose", action="store_true", help="log debug details too", **default)
    if "-q" not in taken:
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="log only warnings and errors; no progress bars",
            **default,
        )
    if "--no-fast" not in taken:
        _add_fast_arg(p, top=top)


def allow_global_flags_anywhere(parser: argparse.ArgumentParser) -> None:
    """The global flags after the subcommand too (``osrkit run ... -q``); ``--data-root``
    is taken before the subcommand by the top-level parser and after it by the commands
    that read datasets."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in dict.fromkeys(action.choices.values()):
            add_global_flags(sub)
            allow_global_flags_anywhere(sub)
