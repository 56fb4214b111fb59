"""Sizes as text: bytes in MiB, and the pages they make."""

from __future__ import annotations

from typing import Optional


def format_bytes(count: Optional[int], page_size: Optional[int] = None) -> str:
    """``count`` bytes in MiB (and in pages when ``page_size`` is given); "n/a" for None."""
    if count is None:
        return "n/a"
    text = f"{count / 2**20:,.1f} MiB" if abs(count) >= 2**20 / 10 else f"{count:,} B"
    if not page_size:
        return text
    pages = count // page_size
    return f"{text} ({pages:,} page{'' if pages == 1 else 's'})"
