"""Columns of strings as pandas, pyarrow and numpy hold them, and the accesses tables have.

The same rows everywhere: ``id``, the int64 0 .. n-1, and ``name``, the
ten-character strings of ``list_str``.  They differ in where the strings
live: one str object each in an ``object`` column; one Arrow buffer of
bytes with an offsets buffer (pyarrow, and pandas 3's default ``str``
dtype); 16-byte cells of a numpy ``StringDType`` array, where strings this
short sit inline.  The libraries are imported when a kind is built, so the
registry itself needs none of them; the accesses' own imports are done then
too, in the parent, because an import in the child would copy pages of its own.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

import numpy as np

from ..facts import release

# (distribution, minimum version) for registry.DataKind.requires.
PANDAS = ("pandas", "2.1")        # StringDtype("pyarrow_numpy"), what became pandas 3's str
PYARROW = ("pyarrow", "10.0")
NUMPY_STRINGDTYPE = ("numpy", "2.0")


def numbered_strings(n: int) -> Iterable[str]:
    """"0000000000", "0000000001", ...: the strings of every kind that holds strings."""
    # Ten digits: every string is 64 bytes in pymalloc on CPython 3.9 to 3.13
    # (the header shrank from 48 to 40 bytes in 3.12), so bytes per element do
    # not depend on n or on the version.
    return (f"{i:010d}" for i in range(n))


def _strings(n: int) -> list:
    return list(numbered_strings(n))


def _pandas() -> Any:
    import pandas
    # to_dict's implementation is a module pandas imports on first call.
    pandas.DataFrame({"id": [0]}).to_dict("records")
    return pandas


def _pyarrow() -> Any:
    import pyarrow
    importlib.import_module("pyarrow.compute")   # for column_sum and str_len_sum
    return pyarrow


def _frame(n: int, names: Any) -> Any:
    pd = _pandas()
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "name": names})


def frame_object_str(n: int) -> Any:
    """A DataFrame whose ``name`` column holds str objects (``object`` dtype, pandas 2's default)."""
    return _frame(n, _pandas().Series(_strings(n), dtype=object))


def arrow_str_dtype() -> Any:
    """pandas 3's default ``str`` dtype: pyarrow storage, NaN for missing values (pandas 2.1 and 2.2 call it ``pyarrow_numpy``)."""
    pd = _pandas()
    if release(pd.__version__) >= (2, 3):
        return pd.StringDtype("pyarrow", na_value=np.nan)
    return pd.StringDtype("pyarrow_numpy")


def frame_arrow_str(n: int) -> Any:
    """A DataFrame whose ``name`` column is pandas 3's default ``str`` dtype, backed by pyarrow."""
    _pyarrow()
    return _frame(n, _pandas().Series(_strings(n), dtype=arrow_str_dtype()))


def frame_default_str(n: int) -> Any:
    """A DataFrame built from a list of str with pandas' default dtypes: what an upgrade to pandas 3 changes."""
    _pyarrow()   # pandas 3 makes str columns pyarrow-backed when pyarrow is installed
    return _frame(n, _strings(n))


def arrow_table(n: int) -> Any:
    """A pyarrow Table with the same two columns."""
    pa = _pyarrow()
    return pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "name": pa.array(_strings(n), type=pa.string())})


def ndarray_stringdtype(n: int) -> np.ndarray:
    """The strings as a numpy ``StringDType`` array (numpy 2.0+)."""
    importlib.import_module("numpy.strings")      # for str_len_sum: numpy loads it lazily
    return np.array(_strings(n), dtype=np.dtypes.StringDType())


# --- accesses that only tables and string arrays have ---

def _library(data: Any) -> str:
    return type(data).__module__.partition(".")[0]


def column_sum(data: Any) -> Any:
    """The sum of the ``id`` column, by the library's own reduction."""
    if _library(data) == "pyarrow":
        return importlib.import_module("pyarrow.compute").sum(data["id"]).as_py()
    return data["id"].sum()


def str_len_sum(data: Any) -> int:
    """The total length of the strings, by the library's own string functions where it has them."""
    library = _library(data)
    if library == "pyarrow":
        pc = importlib.import_module("pyarrow.compute")
        return pc.sum(pc.utf8_length(data["name"])).as_py()
    if library == "pandas":
        return data["name"].str.len().sum()
    if library == "numpy":
        return np.strings.str_len(data).sum()
    return sum(map(len, data))


def itertuples(data: Any) -> None:
    """``for row in data.itertuples(): pass``: one namedtuple per row."""
    for _ in data.itertuples():
        pass


def to_dict(data: Any) -> list:
    """``data.to_dict("records")``: one dict per row, as a frame is turned into JSON."""
    return data.to_dict("records")
