"""``cowmem watch``: how much each worker of a prefork server still shares
with its parent, how that erodes over time, and what it copied.

Modules, one concept each: ``processes`` (finding the parent's children),
``pagemaps`` (reading another process's pages), ``compare`` (copied,
shared, fresh; what is exact), ``watcher`` (samples over time),
``table``, ``json_lines`` and ``plot`` (the outputs).
"""
