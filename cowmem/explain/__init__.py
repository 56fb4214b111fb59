"""Explain copies: name the write that made the kernel copy each page.

A fault server forked from the parent serves the child's write-protect
faults through a userfaultfd and records the exact address of the first
write to every page (tracer.py); each address is then classified against
an index of the data's objects made before the fork (causes.py): an
object's reference count, its GC header, another header field, its
payload, or memory outside the data, and summarised (explanation.py).
"""

from .causes import CAUSES
from .explanation import CauseShare, Explanation
from .tracer import FaultTracer

__all__ = ["CAUSES", "CauseShare", "Explanation", "FaultTracer"]
