"""Copies of numbers held as Python objects: one int or float object per element, or one shared.

Reading a distinct int takes a reference, a write to its header: every page
of ints is copied.  One object referenced n times is one page at most.
"""

from .common import KindCopies


class ListInt(KindCopies):
    kind = "list_int"


class ListSameInt(KindCopies):
    kind = "list_same_int"


class ListSameBigint(KindCopies):
    kind = "list_same_bigint"


class ListFloat(KindCopies):
    kind = "list_float"


class TupleInt(KindCopies):
    kind = "tuple_int"


class DictInt(KindCopies):
    kind = "dict_int"


class SetInt(KindCopies):
    kind = "set_int"
