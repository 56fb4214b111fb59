"""Copies of data in one buffer: numpy arrays, bytes, array.array, a shared mapping.

A read copies nothing but the header page of the object; a write copies
the pages written, unless the buffer is MAP_SHARED.  An object array is a
buffer of pointers to int objects, which are copied as a list's are.
"""

from .common import KindCopies


class Ndarray(KindCopies):
    kind = "ndarray"


class NdarrayObject(KindCopies):
    kind = "ndarray_object"


class Bytes(KindCopies):
    kind = "bytes"


class Bytearray(KindCopies):
    kind = "bytearray"


class ArrayArray(KindCopies):
    kind = "array_array"


class NdarrayShared(KindCopies):
    kind = "ndarray_shared"
