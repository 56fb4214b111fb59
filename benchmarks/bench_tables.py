"""Copies of tables: pandas DataFrames with object or pyarrow strings, and a pyarrow Table.

The same rows each time (an int64 ``id``, a ten-character ``name``); what
differs is where the strings live.  n/a where pandas or pyarrow is missing.
"""

from .common import KindCopies


class FrameObjectStr(KindCopies):
    kind = "frame_object_str"


class FrameArrowStr(KindCopies):
    kind = "frame_arrow_str"


class FrameDefaultStr(KindCopies):
    kind = "frame_default_str"


class ArrowTable(KindCopies):
    kind = "arrow_table"
