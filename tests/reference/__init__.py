"""An independent reference for cowmem's tests: what a child copied, and where an object lives.

- :mod:`reference.outside`: ``watch(access)`` forks a child and compares, from
  the parent, the child's page frames with its own (``/proc/PID/pagemap``).
- :mod:`reference.elements`: ``pages_of(obj)``, the pages holding an object's
  memory, from ``id()``, sizes and ctypes reads of CPython's object layouts.

It imports nothing from cowmem and shares none of its code, so that the two
can be tested against each other.
"""
