"""``cowmem watch``: how much each worker of a prefork server still shares
with its parent, how that erodes over time, and what it copied.

Modules, one concept each: ``processes`` (finding the parent's children),
``pagemaps`` (reading another process's pages), ``compare`` (copied,
shared, fresh; what is exact), ``watcher`` (samples over time),
``table``, ``json_lines`` and ``plot`` (the outputs), ``hook`` (the
in-parent hook, ``attach()``, and the object index it leaves for watch).
"""

from __future__ import annotations

from typing import Optional


def attach(path: Optional[str] = None) -> str:
    """Index this process's heap for ``cowmem watch``, which then says which
    types of this process's objects each worker's copied pages hold.

    Call it in the parent once its data is loaded and before it forks its
    workers, once: e.g. in gunicorn's ``when_ready(server)`` hook.  The
    index is made and written by a forked helper (see ``hook``); returns
    the file written.
    """
    from .hook import attach as attach_

    return attach_(path)
