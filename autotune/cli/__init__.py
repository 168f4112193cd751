"""The ``autotune`` command: argument checking, progress output, one-line errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable, Sequence

from autotune.errors import AutotuneError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autotune`` console script."""
    from autotune.cli.parser import build_parser, join_dash_values

    parser = build_parser()
    args = parser.parse_args(join_dash_values(parser, sys.argv[1:] if argv is None else list(argv)))
    handler: Callable[[argparse.Namespace], int] = args.handler
    for name in ("SIGTERM", "SIGHUP"):  # a stopped run ends like Ctrl-C: trial recorded, children killed
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        return handler(args)
    except AutotuneError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autotune: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"autotune: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or a storage failure: one line, the details only on request
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"autotune: error: {type(exc).__name__}: {first} (set AUTOTUNE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
