"""Linux's per-process memory state: the one platform layer of cowmem.

Everything cowmem reads from ``/proc`` is read here: ``maps`` (the
mappings), ``pagemap`` (one 64-bit entry per virtual page), ``stat`` and
``smaps_rollup`` (the counters), with one encoding of the pagemap bits.

Its modules, each using only those above it:

* ``ranges``: address range arithmetic,
* ``maps``: the mappings (``/proc/PID/maps``),
* ``pagemap``: the pagemap entries and the one encoding of their bits,
* ``page_ranges``: mappings as page numbers, and a page's position in arrays over them,
* ``buffers``: the memory a measuring child writes,
* ``probe``: what this kernel's pagemap can be trusted with (``pagemap_facts``),
* ``snapshots``: what a measuring child reads before and after the access.

docs/method.md describes the method these serve.
"""
