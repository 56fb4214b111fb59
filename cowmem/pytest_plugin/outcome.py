"""How a body that ran in a forked child ends up in pytest's report.

Shared by the hooks (which pytest imports in every session) and the
forked run: nothing heavy here.
"""

from __future__ import annotations

import re
from typing import Any, Collection

import pytest

# The child's own report of a failing body (pytest's rendering of its
# traceback, made in the child), for the test's report in the parent.
CHILD_LONGREPR = pytest.StashKey[Any]()
# Set once the plugin ran an item's body: a marked test that never got
# here was run by something else (unittest, another plugin).
HANDLED = pytest.StashKey[bool]()


class BodyError(Exception):
    """The body raised an exception that could not be sent from the child as itself.

    The test's report shows the child's traceback; this only stands for its type.
    """


class RerunError(Exception):
    """The second, explaining run of a body failed; the message says how."""


_FRAME = re.compile(r'\s+File "(?P<path>.*)", line \d+ in ')


def trim_stack(text: str, stop_files: Collection[str]) -> str:
    """faulthandler's dump of the child, without the frames below the test.

    faulthandler prints each thread's frames innermost first: from the first
    frame in one of ``stop_files`` (the code that called the test function)
    on, they are pytest's and cowmem's, the same in every test.
    """
    out, skipping = [], False
    for line in text.rstrip().splitlines():
        frame = _FRAME.match(line)
        if frame is None:
            skipping = False
            if line.startswith("Extension modules:"):
                continue
        elif skipping:
            continue
        elif frame["path"] in stop_files:
            skipping = True
            line = "  (the frames that called the test: pytest's and cowmem's)"
        out.append(line)
    return "\n".join(out)
