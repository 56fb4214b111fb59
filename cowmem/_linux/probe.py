"""What this kernel's pagemap can be trusted with, found once per process."""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .. import children
from ..errors import UnsupportedPlatformError
from . import pagemap
from .buffers import _MADV_HUGEPAGE, buffer_range, huge_page_size
from .pagemap import (EXCLUSIVE, FILE_OR_SHARED, FLAG_EXCLUSIVE, FLAG_PRESENT, PAGE_SIZE, PFN_MASK, PRESENT,
                      flags, read_entries)


@dataclass(frozen=True)
class PagemapFacts:
    """What this process can read from its pagemap, found once (``pagemap_facts``).

    ``frames_readable``: frame numbers are visible (CAP_SYS_ADMIN).
    ``zero_frame``: the frame number of the kernel's shared zero page, 0
    when frames are hidden.  ``exclusive_per_page``: bit 56 was seen set
    for a 4 KiB page of a huge page that a child maps too, which a kernel
    that decides it per large folio (CONFIG_NO_PAGE_MAPCOUNT) does not do
    (True); None when no huge page could be made to tell.
    """

    frames_readable: bool
    zero_frame: int
    exclusive_per_page: Optional[bool]


_facts: Dict[str, PagemapFacts] = {}


def pagemap_facts(path: Optional[str] = None) -> PagemapFacts:
    """Check that ``path`` (the calling process's pagemap) can be measured with; its facts.

    Raises UnsupportedPlatformError when there is no ``os.fork``, no
    readable pagemap, no exclusive bit, or an exclusive bit decided per
    large folio.  The first call forks one short-lived child; the answer
    is kept for the process.
    """
    path = path or pagemap.PAGEMAP_PATH
    if not hasattr(os, "fork"):
        raise UnsupportedPlatformError("this platform has no os.fork(): cowmem measures forked children")
    if path not in _facts:
        _facts[path] = _probe(path)
    return _facts[path]


def check_pagemap(path: Optional[str] = None) -> None:
    """Raise UnsupportedPlatformError unless ``path``'s pagemap can be measured with (``pagemap_facts``)."""
    pagemap_facts(path)


def zero_page_frame() -> int:
    """The frame number of the kernel's shared zero page; 0 when frame numbers are hidden."""
    return pagemap_facts().zero_frame


def _probe(path: str) -> PagemapFacts:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise UnsupportedPlatformError(
            f"cannot open {path} ({exc.strerror}): cowmem needs Linux's per-page "
            "memory state to count copied pages, and will not guess") from None
    with mmap.mmap(-1, 2 * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        addr = buffer_range(m)[0]
        m[0]        # a read fault maps the zero page
        m[PAGE_SIZE] = 1  # a write fault: a page of this process alone
        zero, written = (int(e) for e in read_entries([(addr, addr + 2 * PAGE_SIZE)], path))
    if written & int(PRESENT | EXCLUSIVE | FILE_OR_SHARED) != int(PRESENT | EXCLUSIVE):
        raise UnsupportedPlatformError(
            f"{path} does not show a page this process just wrote as present and exclusively "
            "mapped (bits 63 and 56; Linux 4.2+ reports both): copied pages cannot be told "
            "from shared ones")
    frames_readable = bool(written & int(PFN_MASK))
    zero_frame = zero & int(PFN_MASK) if frames_readable and zero & int(PRESENT) else 0
    per_page = _judge_huge_page(_huge_page_split_by_both(path))
    if per_page is False:
        raise UnsupportedPlatformError(
            "this kernel decides pagemap's exclusive bit (56) per large folio, not per 4 KiB page "
            "(CONFIG_NO_PAGE_MAPCOUNT, Linux 6.15+): a page of a huge page that only one process "
            "maps can read as shared, so copies cannot be counted page-exactly; cowmem refuses "
            "rather than count wrong")
    return PagemapFacts(frames_readable, zero_frame, per_page)


def _judge_huge_page(flags_after: Optional[np.ndarray]) -> Optional[bool]:
    """Per page (True) or per folio (False), from ``_huge_page_split_by_both``; None: cannot tell."""
    if flags_after is None:
        return None
    mine = (flags_after & (FLAG_PRESENT | FLAG_EXCLUSIVE)) == (FLAG_PRESENT | FLAG_EXCLUSIVE)
    present = (flags_after & FLAG_PRESENT) != 0
    if not (present.all() and mine[1]) or mine[2:].any():
        return None          # not what a huge page split by both processes looks like
    return bool(mine[0])


def _huge_page_split_by_both(path: str) -> Optional[np.ndarray]:
    """This process's flags for the pages of a huge page that it and a child each wrote once.

    Each write copies one 4 KiB page (Linux 5.8+) and maps the huge page
    by 4 KiB pages in the writer.  The child writes page 0, this process
    page 1: page 0 of the huge page is then mapped by this process alone,
    which per-page accounting shows as exclusive and per-folio accounting,
    the folio being mapped by both, does not.  Page 1 is this process's own
    copy, the others are shared.  (Read while mapped whole by a 2 MiB entry,
    a huge page's 512 entries all take the exclusive bit of its first page,
    on Linux 6.18 at least: hence both writes.)  None when no huge page
    could be made.
    """
    size = huge_page_size()
    if not size:
        return None
    with mmap.mmap(-1, 2 * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        base = buffer_range(m)[0]
        offset = -base % size
        try:
            m.madvise(_MADV_HUGEPAGE, offset, size)
        except OSError:
            return None
        m[offset] = 1  # one fault maps the whole huge page, if the kernel can make one
        if _anon_huge_bytes(base + offset) < size:
            return None
        with children.held_back() as handlers:
            return _write_with_a_child(m, offset, size, path, handlers)


def _write_with_a_child(m: mmap.mmap, offset: int, size: int, path: str,
                        handlers: children.Handlers) -> Optional[np.ndarray]:
    """The writes of ``_huge_page_split_by_both``, and this process's flags after them."""
    wrote_r, wrote_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            children.become_child(handlers)
            m[offset] = 2
            os.write(wrote_w, b"x")
            os.read(hold_r, 1)  # keep the huge page shared until the parent has looked
        finally:
            os._exit(0)
    try:
        os.close(wrote_w)
        wrote_w = -1
        if os.read(wrote_r, 1) != b"x":
            return None
        m[offset + PAGE_SIZE] = 2
        base = buffer_range(m)[0] + offset
        return flags(read_entries([(base, base + size)], path))
    finally:
        for fd in (wrote_r, wrote_w, hold_r, hold_w):
            if fd >= 0:
                os.close(fd)
        children.end(pid)


_SMAPS_HEADER = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) ", re.M)


def _anon_huge_bytes(addr: int) -> int:
    """AnonHugePages of the calling process's mapping that holds ``addr``, in bytes."""
    with open("/proc/self/smaps", "rb") as f:
        text = f.read()
    headers = list(_SMAPS_HEADER.finditer(text))
    for here, after in zip(headers, headers[1:] + [None]):
        if int(here[1], 16) <= addr < int(here[2], 16):
            block = text[here.end():after.start() if after else len(text)]
            found = re.search(rb"^AnonHugePages:\s+(\d+) kB", block, re.M)
            return int(found[1]) * 1024 if found else 0
    return 0
