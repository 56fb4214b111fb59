"""Sizes as text: bytes in MiB, the pages they make, and sizes read from text."""

from __future__ import annotations

import re
from typing import Optional, Union

# Binary (IEC) units only: "KB" means 1,000 bytes to some and 1,024 to
# others, and a limit must not depend on which.
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[A-Za-z]+)\s*")


def format_bytes(count: Optional[int], page_size: Optional[int] = None) -> str:
    """``count`` bytes in MiB (and in pages when ``page_size`` is given); "n/a" for None."""
    if count is None:
        return "n/a"
    text = f"{count / 2**20:,.1f} MiB" if abs(count) >= 2**20 / 10 else f"{count:,} B"
    if not page_size:
        return text
    pages = count // page_size
    return f"{text} ({pages:,} page{'' if pages == 1 else 's'})"


def parse_size(size: Union[str, int]) -> int:
    """A size in bytes from an int (bytes) or a text such as "64 KiB", "1.5 MiB", "4096 B".

    The units are B, KiB, MiB, GiB and TiB (any case); a fraction of a
    larger unit is rounded down to whole bytes.  Raises ValueError saying
    what is wrong (a negative size, a missing or unknown unit, or "KB" and "MB",
    which tools read in powers of 1,000 or of 1,024), TypeError for anything but an int
    or a str.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"a size is an int (bytes) or a text like '64 KiB', not {type(size).__name__}")
    if isinstance(size, int):
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size}")
        return size
    match = _SIZE.fullmatch(size)
    if match is None:
        raise ValueError(f"cannot read {size!r} as a size: write a number and a unit, "
                         "e.g. '64 KiB', '1.5 MiB' or '4096 B'")
    unit = match["unit"].lower()
    if unit in ("kb", "mb", "gb", "tb"):
        binary = f"{match['number']} {unit[0].upper()}iB"
        raise ValueError(f"{size.strip()!r} is ambiguous (tools differ on whether {unit.upper()} counts "
                         f"in powers of 1,000 or 1,024): write {binary!r} for {parse_size(binary):,} bytes")
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {match['unit']!r} in {size!r}: use B, KiB, MiB, GiB or TiB")
    whole, _, fraction = match["number"].partition(".")
    if unit == "b" and fraction.strip("0"):
        raise ValueError(f"{size!r} is not a whole number of bytes")
    # Exact decimal arithmetic, rounded down to whole bytes: 1.1 MiB is
    # 1,153,433 bytes, whatever a float would make of it.
    scale = 10 ** len(fraction)
    return (int(whole or "0") * scale + int(fraction or "0")) * _UNITS[unit] // scale
