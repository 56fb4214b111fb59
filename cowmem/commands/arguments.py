"""Argument types the commands share: element counts, factors, worker counts.

Each raises ``argparse.ArgumentTypeError`` with the reason, which argparse
turns into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import decimal
import math


# Sizes of this many digits and more are refused as typed, before an
# integer of millions of digits is made of them; below, the memory check
# refuses what would not fit, with the reason.
SIZE_DIGITS = 100


def size(text: str) -> int:
    """A count of elements: ``1000000``, ``1_000_000`` or ``1e6``; at least 1."""
    try:
        number = decimal.Decimal(text.replace("_", ""))  # exact: 1e40 is 10**40, not a float's guess
    except decimal.InvalidOperation:
        number = decimal.Decimal("NaN")
    if not number.is_finite():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    # A Decimal keeps 1e10000000 as a digit and an exponent: its size is known first.
    if number.adjusted() >= SIZE_DIGITS:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise argparse.ArgumentTypeError(f"must be less than 1e{SIZE_DIGITS} (far beyond any memory), "
                                         f"not {shown}")
    if number != number.to_integral_value():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    value = int(number)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# A factor beyond this makes every size larger than any memory.
MAX_SCALE = 1e6


def scale(text: str) -> float:
    """A positive factor, at most MAX_SCALE."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    if value > MAX_SCALE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SCALE:g}, not {text}")
    return value


# More workers than this on a 2-core machine measure the scheduler, not memory.
MAX_WORKERS = 64


def workers(text: str) -> int:
    """A number of worker processes, 1 to MAX_WORKERS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WORKERS}, not {value}")
    return value
