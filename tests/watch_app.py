"""A WSGI app for `cowmem watch` to watch under a prefork server (gunicorn, --preload).

The parent imports it and builds the data once: ``WORDS``, a dict of
WATCH_APP_N str keys to str values, and ``NUMBERS``, a list of as many
ints (none of them small enough to be cached).  ``GET /read?part=I&of=N``
reads part I of N of both (every key, its value, every number) and
answers with the worker's pid, the page numbers (address >> 12) of the
objects it read (those pages hold the objects' reference counts, which
reading writes, so the worker must have copied at least those) and, by
type, the bytes of those objects on those pages.  The
answer comes after a pause (WATCH_APP_PAUSE seconds), so that concurrent
clients keep every worker busy.  With WATCH_APP_GC_COLLECT=1 each
request first runs ``gc.collect()``.  The client is ``watching.client``.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import sys
import time
import urllib.parse
from typing import Dict, Set, Tuple

N = int(os.environ.get("WATCH_APP_N", "200000"))
PAUSE = float(os.environ.get("WATCH_APP_PAUSE", "0.2"))
GC_COLLECT = os.environ.get("WATCH_APP_GC_COLLECT") == "1"
PAGE = mmap.PAGESIZE

WORDS = {f"key {i:08d}": f"value {i} " * 4 for i in range(N)}
NUMBERS = [10**9 + i for i in range(N)]
KEYS = list(WORDS)


def read(part: int, parts: int) -> Tuple[Set[int], Dict[str, int]]:
    """Read part ``part`` of ``parts``: the pages of every object read, and
    by type the bytes of those objects that lie on the page where each
    one starts (a page that reading must have copied)."""
    lo, hi = part * N // parts, (part + 1) * N // parts
    pages = set()
    heads = {"str": 0, "int": 0}
    total = 0
    for key in KEYS[lo:hi]:
        value = WORDS[key]
        total += len(value)
        for s in (key, value):
            pages.add(id(s) >> 12)
            heads["str"] += min(sys.getsizeof(s), PAGE - id(s) % PAGE)
    for number in NUMBERS[lo:hi]:
        total += number
        pages.add(id(number) >> 12)
        heads["int"] += min(sys.getsizeof(number), PAGE - id(number) % PAGE)
    return pages, heads


def app(environ, start_response):
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if GC_COLLECT:
        gc.collect()
    pages, heads = read(int(query["part"][0]), int(query["of"][0]))
    time.sleep(PAUSE)
    body = json.dumps({"pid": os.getpid(), "pages": sorted(pages), "heads": heads}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

