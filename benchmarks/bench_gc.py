"""What ``gc.freeze()`` in the parent spares a child's ``gc.collect()``.

A collection writes the GC header of every object it examines, and the
collector tracks containers and instances: a child that collects copies
every page of them.  ``gc.freeze()`` before the fork (what preloading
servers are advised to do) moves them to a generation no collection
examines.  Measured for the kinds whose elements are tracked; the same
collection without freezing is in each kind's own class (``gc=plain``).
Other accesses are not measured frozen: they run no full collection, so
freezing changes nothing for them.
"""

from .common import KindCopies


class FrozenCollection(KindCopies):
    """gc.collect() in the child after gc.freeze() in the parent; a subclass names the kind."""

    accesses = ["gc_collect"]
    gc_variants = ["freeze"]


class ListOfLists(FrozenCollection):
    kind = "list_of_lists"


class ListOfInstances(FrozenCollection):
    kind = "list_of_instances"


class ListOfDataclasses(FrozenCollection):
    kind = "list_of_dataclasses"


class ListOfSlots(FrozenCollection):
    kind = "list_of_slots"


class JsonDocument(FrozenCollection):
    kind = "json_document"
