"""Value types of command-line options, shared by the CLI and the options backends add: each refuses bad input
with a message argparse prints on one line."""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer option of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def duration(text: str) -> float:
    """Seconds, written as 600, 45s, 90m, 2h or 7d."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 600, 45s, 90m, 2h, 7d)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def device_list(text: str) -> list[int]:
    """A comma list of distinct device numbers, e.g. 0,1."""
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of device QIDs, e.g. 0,1") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"{text!r}: QIDs must be distinct and not negative")
    return indices


def input_shape(text: str) -> tuple[str, list[int]]:
    """NAME=D0,D1,... with positive dimensions."""
    name, sep, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=D0,D1,... with positive integer dimensions")
    return name, shape
