"""Copies of strings: str objects in a list or a dict, interned or not, and numpy StringDType.

Interned strings are immortal in CPython 3.12.0 to 3.12.6: reading them
writes nothing there.  A StringDType array keeps short strings inside its
own 16-byte cells, with no str object to write.
"""

from .common import KindCopies


class ListStr(KindCopies):
    kind = "list_str"


class ListInternedStr(KindCopies):
    kind = "list_interned_str"


class DictStr(KindCopies):
    kind = "dict_str"


class NdarrayStringdtype(KindCopies):
    kind = "ndarray_stringdtype"
