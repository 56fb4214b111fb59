"""Copies of containers and records: lists, instances, dataclasses, __slots__, JSON, a dataset.

The lists, instances and JSON records are GC-tracked: a collection in the
child writes their GC headers (``bench_gc`` measures it after
``gc.freeze()`` in the parent too).  The dataset (file paths and a dict of
labels) is read the way a DataLoader's workers read one.
"""

from .common import KindCopies


class ListOfLists(KindCopies):
    kind = "list_of_lists"


class ListOfInstances(KindCopies):
    kind = "list_of_instances"


class ListOfDataclasses(KindCopies):
    kind = "list_of_dataclasses"


class ListOfSlots(KindCopies):
    kind = "list_of_slots"


class JsonDocument(KindCopies):
    kind = "json_document"


class PathDataset(KindCopies):
    kind = "path_dataset"
