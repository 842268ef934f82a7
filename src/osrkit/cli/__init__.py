"""Command-line interface: a thin layer over ``osrkit.jobs.pipeline`` and ``OpenSetRecognizer``.

``arguments`` holds the option types and groups, ``parser`` the subcommands, ``commands``
what each one does; ``main`` here runs one and turns expected failures into one line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from PIL import Image

from osrkit.cli.commands import COMMANDS, format_summary
from osrkit.cli.logs import cli_logging, log_level
from osrkit.cli.parser import build_parser
from osrkit.errors import OsrkitError
from osrkit.files.atomic import os_error_line

__all__ = ["build_parser", "format_summary", "main"]


def _interrupt_on_termination() -> None:
    """Treat SIGTERM and SIGHUP (a closed terminal, a stopped job) like Ctrl-C, so staged
    outputs are cleaned up and checkpoints kept instead of the process dying mid-write."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and threading.current_thread() is threading.main_thread():
            signal.signal(getattr(signal, name), handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_logging(log_level(args.verbose, args.quiet)):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    progress = not args.quiet and sys.stderr.isatty()
    _interrupt_on_termination()
    # the readers refuse an image over Pillow's pixel limit from its header, in one line
    # naming it; Pillow's own warning would only repeat it, over several lines
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    saved_fast = os.environ.get("OSRKIT_FAST")
    if args.no_fast:
        os.environ["OSRKIT_FAST"] = "0"  # read by FastPaths.default() wherever a model is built
    try:
        return _run_command(args, progress)
    finally:  # main() may be called from Python: leave the environment as it was
        if saved_fast is None:
            os.environ.pop("OSRKIT_FAST", None)
        else:
            os.environ["OSRKIT_FAST"] = saved_fast


# Old command names, kept for one release (CHANGELOG 0.2.0): they were easy to confuse.
RENAMED = {"bench": "perf", "benchmark": "protocol"}


def _run_command(args: argparse.Namespace, progress: bool) -> int:
    """Run the command; every expected failure becomes one line on stderr and exit code 2."""
    if args.command in RENAMED:
        new = RENAMED[args.command]
        print(
            f"osrkit: note: `osrkit {args.command}` is now `osrkit {new}`; the old name goes in 0.3",
            file=sys.stderr,
        )
        args.command = new
    try:
        return COMMANDS[args.command](args, progress)
    except OsrkitError as exc:
        print(f"osrkit: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "osrkit: error: out of memory; use fewer images (--max-*) or a smaller --batch-size",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # e.g. `osrkit predict ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # unwritable output, full disk, unreadable file outside the readers
        print(f"osrkit: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.command in ("run", "train")
        hint = "; training state is checkpointed: rerun the same command to resume" if resumable else ""
        print(f"osrkit: interrupted; nothing half-written was left behind{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
