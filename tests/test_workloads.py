"""The registry of data kinds and accesses, and measuring a named pair."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import gc
import math
import os
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from cowmem import CowmemError, memory_ranges, samples, workloads
from cowmem.errors import InsufficientMemoryError, NotApplicableError, UnknownNameError
from cowmem.workloads import (ACCESSES, DATA_KINDS, Item, PathDataset, Record, SlotRecord, applies, build,
                              check_pair, estimate_bytes, measure)

CONTRACT_KINDS = ["ndarray", "list_int", "list_same_int", "list_same_bigint", "list_float", "list_str",
                  "list_interned_str", "tuple_int", "dict_int", "set_int", "ndarray_object", "list_of_lists",
                  "list_of_instances", "bytes", "bytearray", "array_array", "ndarray_shared",
                  "frame_object_str", "frame_arrow_str", "frame_default_str", "arrow_table",
                  "ndarray_stringdtype", "dict_str", "json_document", "list_of_dataclasses", "list_of_slots",
                  "path_dataset"]
CONTRACT_ACCESSES = ["none", "len", "sum", "iterate", "gc_collect", "write", "sample", "copy", "pickle",
                     "random_index", "json_dumps", "column_sum", "str_len_sum", "itertuples", "to_dict"]

# Which accesses apply to which kind, written out from what each kind is:
# numbers can be summed, only mutable sequences written in place, only
# sequences indexed by position, only JSON's types dumped, only tables and
# strings have columns and string lengths, only frames itertuples.
_EVERYWHERE = "none len gc_collect copy pickle"
APPLY = {
    "ndarray": "sum iterate write sample random_index",
    "list_int": "sum iterate write sample random_index json_dumps",
    "list_same_int": "sum iterate write sample random_index json_dumps",
    "list_same_bigint": "sum iterate write sample random_index json_dumps",
    "list_float": "sum iterate write sample random_index json_dumps",
    "list_str": "iterate write sample random_index json_dumps str_len_sum",
    "list_interned_str": "iterate write sample random_index json_dumps str_len_sum",
    "tuple_int": "sum iterate sample random_index json_dumps",
    "dict_int": "sum iterate sample random_index json_dumps",          # its keys are 0 .. n-1
    "set_int": "sum iterate",
    "ndarray_object": "sum iterate write sample random_index",
    "list_of_lists": "iterate write sample random_index json_dumps",
    "list_of_instances": "iterate write sample random_index",
    "bytes": "sum iterate sample random_index",
    "bytearray": "sum iterate write sample random_index",
    "array_array": "sum iterate write sample random_index",
    "ndarray_shared": "sum iterate write sample random_index",
    "frame_object_str": "column_sum str_len_sum itertuples to_dict",
    "frame_arrow_str": "column_sum str_len_sum itertuples to_dict",
    "frame_default_str": "column_sum str_len_sum itertuples to_dict",
    "arrow_table": "column_sum str_len_sum",
    "ndarray_stringdtype": "iterate write sample random_index str_len_sum",
    "dict_str": "iterate json_dumps",                                  # its keys are not positions
    "json_document": "iterate write sample random_index json_dumps",
    "list_of_dataclasses": "iterate write sample random_index",
    "list_of_slots": "iterate write sample random_index",
    "path_dataset": "iterate sample random_index",
}
APPLICABLE = [(d, a) for d in CONTRACT_KINDS for a in CONTRACT_ACCESSES if a in f"{_EVERYWHERE} {APPLY[d]}".split()]
NOT_APPLICABLE = {(d, a) for d in CONTRACT_KINDS for a in CONTRACT_ACCESSES} - set(APPLICABLE)
# Kinds whose elements the collector tracks: where gc.freeze() in the parent can matter.
TRACKED = {"list_of_lists", "list_of_instances", "json_document", "list_of_dataclasses", "list_of_slots"}
LIBRARY_KINDS = {"frame_object_str", "frame_arrow_str", "frame_default_str", "arrow_table", "ndarray_stringdtype"}

# CPython keeps the ints -5..256 as shared singletons; build() makes the others.
SMALL_INTS = 257
IMMORTAL_SMALL_INTS = sys.version_info >= (3, 12)
GC_HEAD = 2 * struct.calcsize("P")
# Pages of the data that also hold other objects, written around the fork
# (by measure_fork's parent side after gc.freeze(), or by the child before
# the access) and so not counted, or counted, by chance: a handful of the
# hundreds the tests expect.
SHARED_PAGES = 16


def elements(data: object) -> object:
    """The contents of built data, comparable with == (instances by their values, tables by column)."""
    if hasattr(data, "itertuples"):                     # a pandas DataFrame
        return data.to_dict("list")
    if hasattr(data, "to_pydict"):                      # a pyarrow Table
        return data.to_pydict()
    if isinstance(data, PathDataset):
        return [data[i] for i in range(len(data))]
    return [x.value if isinstance(x, Item) else (x.id, x.name) if isinstance(x, (Record, SlotRecord)) else x
            for x in data]


def built(data: str, n: int) -> object:
    """``build(data, n)``; a skip, saying why, where the kind's library is missing here."""
    reason = DATA_KINDS[data].missing()
    if reason is not None:
        pytest.skip(reason)
    return build(data, n)


def pages(ranges, page: int) -> set:
    """Page numbers overlapping half-open byte ranges."""
    return {p for start, stop in ranges for p in range(start // page, (stop - 1) // page + 1)}


# --- names, descriptions, applicability ---

def test_every_contract_name_is_registered_in_order():
    assert list(DATA_KINDS) == CONTRACT_KINDS
    assert list(ACCESSES) == CONTRACT_ACCESSES
    assert workloads.GC_VARIANTS == ("plain", "freeze")


@pytest.mark.parametrize("registry", [DATA_KINDS, ACCESSES], ids=["data", "access"])
def test_entries_carry_their_name_and_a_one_line_description(registry):
    for name, entry in registry.items():
        assert entry.name == name
        assert entry.description and "\n" not in entry.description
        assert entry.description == entry.description.strip()


def test_registries_are_read_only():
    with pytest.raises(TypeError):
        DATA_KINDS["mine"] = DATA_KINDS["ndarray"]


def test_applicability_is_exactly_the_rule():
    assert {(d, a) for d in CONTRACT_KINDS for a in CONTRACT_ACCESSES if not applies(d, a)} == NOT_APPLICABLE
    for data in CONTRACT_KINDS:
        assert workloads.accesses_for(data) == tuple(a for a in CONTRACT_ACCESSES if (data, a) in APPLICABLE)


def test_the_tracked_kinds_are_those_whose_elements_the_collector_tracks():
    assert set(workloads.tracked_kinds()) == TRACKED
    for data in TRACKED:
        assert all(gc.is_tracked(x) for x in build(data, 100)), data
    # The Python containers among the others hold nothing the collector tracks.
    for data in ["list_int", "list_str", "tuple_int", "dict_int", "set_int", "dict_str"]:
        built = build(data, 100)
        assert not any(gc.is_tracked(x) for x in built), data
    dataset = build("path_dataset", 100)
    assert not gc.is_tracked(dataset.labels) and not any(map(gc.is_tracked, dataset.paths))


@pytest.mark.parametrize("data, access", APPLICABLE)
def test_every_applicable_access_runs_on_its_data(data, access):
    obj = built(data, 64)
    (ACCESSES[access].run or (lambda _: None))(obj)  # in this process: no exception is the property


NO_IMPORT_IN_THE_CHILD = """
import os, sys
from cowmem import workloads
pairs = [(kind, access) for kind in workloads.DATA_KINDS for access in workloads.ACCESSES
         if access != "none" and workloads.applies(kind, access)]
for kind, access in pairs:
    try:
        data = workloads.build(kind, 1000)
    except workloads.MissingLibraryError:
        continue
    read, write = os.pipe()
    before = set(sys.modules)
    if os.fork() == 0:
        workloads.ACCESSES[access].run(data)
        os.write(write, " ".join(sorted(set(sys.modules) - before)).encode())
        os._exit(0)
    os.close(write)
    new = os.read(read, 65536).decode()
    os.wait()
    print(kind, access, new)
"""


def test_no_access_imports_a_module_in_the_child():
    # The kinds' builds and cowmem import everything an access needs, in the
    # parent: an import in the child would copy pages of the interpreter's own.
    done = subprocess.run([sys.executable, "-c", NO_IMPORT_IN_THE_CHILD], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 2) for line in done.stdout.splitlines()]
    assert len(lines) >= len(APPLY)                # every kind had at least one access
    assert [line for line in lines if len(line) == 3 and line[2]] == []


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "sum")])
def test_sum_adds_up_the_elements(data):
    built = build(data, 300)
    assert ACCESSES["sum"].run(built) == sum(int(x) for x in elements(built))


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "write")])
def test_write_rewrites_the_same_values(data):
    built = build(data, 300)
    before = elements(built)
    ACCESSES["write"].run(built)
    assert elements(built) == before


class Recorder:
    """A sequence that records the positions read from it."""

    def __init__(self, n: int) -> None:
        self.n, self.read = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> None:
        self.read.append(i)


def test_sample_reads_a_tenth_of_the_positions_the_same_every_time():
    n = 100_000
    first, second = Recorder(n), Recorder(n)
    ACCESSES["sample"].run(first)
    ACCESSES["sample"].run(second)
    assert first.read == second.read
    assert len(first.read) == n // 10 and all(0 <= i < n for i in first.read)
    # Drawn with replacement: 1 - (1 - 1/n)**(n/10) = 9.52 % of the positions are distinct.
    assert 0.0925 < len(set(first.read)) / n < 0.0975
    assert first.read != sorted(first.read)


def test_random_index_reads_every_position_once_in_a_fixed_shuffled_order():
    n = 10_000
    first, second = Recorder(n), Recorder(n)
    ACCESSES["random_index"].run(first)
    ACCESSES["random_index"].run(second)
    assert first.read == second.read and sorted(first.read) == list(range(n))
    assert first.read != sorted(first.read)
    assert all(type(i) is int for i in first.read)   # Python ints, as a sampler hands them


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "json_dumps")])
def test_json_dumps_writes_the_data(data):
    built = build(data, 300)
    assert json.loads(ACCESSES["json_dumps"].run(built)) == json.loads(json.dumps(built))


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "column_sum")])
def test_column_sum_adds_up_the_ids(data):
    assert ACCESSES["column_sum"].run(built(data, 1000)) == 999 * 1000 // 2


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "str_len_sum")])
def test_str_len_sum_counts_every_character(data):
    assert ACCESSES["str_len_sum"].run(built(data, 1000)) == 10 * 1000


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if applies(d, "to_dict")])
def test_to_dict_gives_one_record_per_row(data):
    records = ACCESSES["to_dict"].run(built(data, 100))
    assert records == [{"id": i, "name": STRINGS[i]} for i in range(100)]


def test_itertuples_visits_every_row():
    rows = []

    class Frame:
        def itertuples(self):
            for i in range(50):
                rows.append(i)
                yield i

    ACCESSES["itertuples"].run(Frame())
    assert rows == list(range(50))


@pytest.mark.parametrize("data", [d for d in CONTRACT_KINDS if d.startswith("frame_")])
def test_copy_of_a_frame_copies_its_columns_before_pandas_3(data):
    # pandas 3's copy-on-write made copy.copy(frame) shallow (deep=False); before, it was deep.
    pd = pytest.importorskip("pandas")
    frame = built(data, 100)
    copied = ACCESSES["copy"].run(frame)
    shared = np.shares_memory(copied["id"].to_numpy(), frame["id"].to_numpy())
    assert shared == (int(pd.__version__.split(".")[0]) >= 3)


# --- errors ---

@pytest.mark.parametrize("call", [
    lambda: applies("nope", "sum"), lambda: check_pair("nope", "sum"), lambda: estimate_bytes("nope", 1),
    lambda: build("nope", 1), lambda: measure("nope", "sum", 1)])
def test_an_unknown_data_kind_lists_the_valid_names(call):
    with pytest.raises(UnknownNameError) as info:
        call()
    assert "'nope'" in str(info.value)
    assert all(name in str(info.value) for name in DATA_KINDS)


@pytest.mark.parametrize("call", [
    lambda: applies("ndarray", "summ"), lambda: check_pair("ndarray", "summ"),
    lambda: measure("ndarray", "summ", 1)])
def test_an_unknown_access_lists_the_valid_names_and_a_close_one(call):
    with pytest.raises(UnknownNameError) as info:
        call()
    assert "did you mean 'sum'?" in str(info.value)
    assert all(name in str(info.value) for name in ACCESSES)
    assert isinstance(info.value, CowmemError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("data, access", sorted(NOT_APPLICABLE))
def test_a_pair_that_does_not_apply_says_which_and_why(data, access):
    with pytest.raises(NotApplicableError) as info:
        check_pair(data, access)
    message = str(info.value)
    assert f"'{access}'" in message and f"'{data}'" in message and "it needs" in message


def test_measure_refuses_a_pair_that_does_not_apply_before_building():
    # 10**15 strings would be refused as too large if measure built first.
    with pytest.raises(NotApplicableError):
        measure("list_str", "sum", 10**15)


@pytest.mark.parametrize("n", [-1, 1.5, "10", None, True, 2.0])
def test_a_size_that_is_not_a_count_is_refused(n):
    with pytest.raises(ValueError, match="n must be"):
        build("list_int", n)
    with pytest.raises(ValueError, match="n must be"):
        estimate_bytes("list_int", n)


def test_a_numpy_integer_is_a_size():
    assert build("list_int", np.int64(5)) == [0, 1, 2, 3, 4]


@pytest.fixture
def spy_kind(monkeypatch):
    """list_int whose build is recorded: proves whether anything was built."""
    calls = []
    real = DATA_KINDS["list_int"]
    kinds = dict(DATA_KINDS, list_int=dataclasses.replace(
        real, build=lambda n: calls.append(n) or real.build(n)))
    monkeypatch.setattr(workloads, "DATA_KINDS", kinds)
    return calls


def available(monkeypatch, nbytes: int) -> None:
    monkeypatch.setattr(workloads.psutil, "virtual_memory", lambda: SimpleNamespace(available=nbytes))


def test_a_size_that_does_not_fit_is_refused_before_building(monkeypatch, spy_kind):
    need = estimate_bytes("list_int", 10**6)
    available(monkeypatch, need - 1)
    with pytest.raises(InsufficientMemoryError) as info:
        build("list_int", 10**6)
    assert spy_kind == []
    message = str(info.value)
    assert f"{need / 2**20:,.1f} MiB" in message and f"{(need - 1) / 2**20:,.1f} MiB" in message
    assert "n=1,000,000" in message and "list_int" in message


def test_a_size_that_just_fits_is_built(monkeypatch, spy_kind):
    available(monkeypatch, estimate_bytes("list_int", 1000))
    assert build("list_int", 1000) == list(range(1000))
    assert spy_kind == [1000]


def test_an_impossible_size_is_refused_on_this_machine():
    with pytest.raises(InsufficientMemoryError, match="ndarray"):
        build("ndarray", 10**14)  # 800 TB


# --- what the kinds build ---

@pytest.mark.parametrize("data", CONTRACT_KINDS)
def test_builds_are_deterministic_and_sized(data):
    first, second = built(data, 1000), built(data, 1000)
    assert len(first) == 1000 and len(built(data, 0)) == 0
    assert elements(first) == elements(second)


def test_what_the_kinds_hold():
    n = 1000
    assert np.array_equal(build("ndarray", n), np.ones(n)) and build("ndarray", n).dtype == np.float64
    assert build("list_int", n) == list(range(n))
    same = build("list_same_int", n)
    assert all(x is same[0] for x in same) and same[0] == 1
    big = build("list_same_bigint", n)
    assert all(x is big[0] for x in big) and big[0] == 10**20
    strings = build("list_str", n)
    assert len({len(s) for s in strings}) == 1 and len(set(strings)) == n
    interned = build("list_interned_str", n)
    assert interned == strings and all(s is sys.intern(s) for s in interned)
    assert build("tuple_int", n) == tuple(range(n))
    assert build("dict_int", n) == {i: i for i in range(n)}
    assert build("set_int", n) == set(range(n))
    assert build("ndarray_object", n).dtype == object and list(build("ndarray_object", n)) == list(range(n))
    assert [x[0] for x in build("list_of_lists", n)] == list(range(n))
    assert [x.value for x in build("list_of_instances", n)] == list(range(n))
    assert build("bytes", 300) == bytes(range(256)) + bytes(range(44))
    assert build("bytearray", 300) == bytearray(build("bytes", 300))
    assert build("array_array", n).tolist() == list(range(n)) and build("array_array", n).itemsize == 8


STRINGS = [f"{i:010d}" for i in range(1000)]


def test_the_frames_hold_the_same_rows_with_their_strings_where_the_names_say():
    pd = pytest.importorskip("pandas")
    for data in ["frame_object_str", "frame_arrow_str", "frame_default_str"]:
        frame = build(data, 1000)
        assert frame["id"].dtype == np.int64 and frame["id"].tolist() == list(range(1000))
        assert frame["name"].tolist() == STRINGS
    names = build("frame_object_str", 1000)["name"]
    assert names.dtype == object and all(type(s) is str for s in names.array)
    arrow = build("frame_arrow_str", 1000)["name"].dtype
    assert isinstance(arrow, pd.StringDtype) and arrow.storage in ("pyarrow", "pyarrow_numpy")
    assert arrow.na_value is np.nan   # pandas 3's str semantics, not pd.NA's "string"
    default = build("frame_default_str", 1000)["name"].dtype
    if int(pd.__version__.split(".")[0]) >= 3:
        assert default == arrow
    else:
        assert default == object


def test_the_arrow_table_and_the_stringdtype_array_hold_the_same_strings():
    pa = pytest.importorskip("pyarrow")
    table = build("arrow_table", 1000)
    assert table.schema.field("id").type == pa.int64() and table.schema.field("name").type == pa.string()
    assert table.to_pydict() == {"id": list(range(1000)), "name": STRINGS}
    if not hasattr(np.dtypes, "StringDType"):
        pytest.skip(f"numpy {np.__version__} has no StringDType")
    arr = build("ndarray_stringdtype", 1000)
    assert arr.dtype == np.dtypes.StringDType() and arr.tolist() == STRINGS


def test_the_records_documents_and_datasets():
    n = 1000
    assert build("dict_str", n) == {f"k{i:09d}": STRINGS[i] for i in range(n)}
    records = build("list_of_dataclasses", n)
    assert all(dataclasses.is_dataclass(r) for r in records) and elements(records) == list(enumerate(STRINGS))
    slots = build("list_of_slots", n)
    assert not any(hasattr(r, "__dict__") for r in slots) and elements(slots) == list(enumerate(STRINGS))
    document = build("json_document", n)
    assert document[3] == {"id": 3, "name": STRINGS[3], "tags": ["odd"]} and len(document) == n
    # Parsed, not built: json.loads gives every record the same key objects.
    assert all(a is b for a, b in zip(document[0], document[1]))
    dataset = build("path_dataset", n)
    assert len(dataset) == n and dataset[123] == ("/data/train/class_3/00000123.jpg", 3)
    assert len(set(dataset.paths)) == n and dataset.labels[dataset.paths[9]] == 9


def test_a_kind_whose_library_is_missing_is_not_applicable_saying_which(monkeypatch):
    from importlib import metadata

    real = metadata.version

    def without_pyarrow(name):
        if name == "pyarrow":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", without_pyarrow)
    with pytest.raises(workloads.MissingLibraryError, match="'arrow_table' needs pyarrow, which is not installed"):
        build("arrow_table", 10)
    assert isinstance(workloads.MissingLibraryError("x"), NotApplicableError)
    monkeypatch.setattr(metadata, "version", lambda name: "1.26.4" if name == "numpy" else real(name))
    with pytest.raises(NotApplicableError, match="needs numpy >= 2.0, and numpy 1.26.4 is installed"):
        build("ndarray_stringdtype", 10)
    assert build("list_int", 3) == [0, 1, 2]

def test_ndarray_shared_is_shared_with_a_forked_child():
    arr = build("ndarray_shared", 1000)
    assert np.array_equal(arr, np.ones(1000))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        arr[7] = 5.0
        os._exit(0)
    os.waitpid(pid, 0)
    assert arr[7] == 5.0  # the child's write reached the parent: MAP_SHARED


# --- the memory estimate against real peaks ---

# Runs in a fresh interpreter: each kind is built in a forked child, whose
# peak RSS (VmHWM) is first reset to its current RSS (clear_refs 5).  A
# forked child maps the parent's code pages again as it runs them (fork does
# not copy page tables of read-only file mappings): a small build first maps
# the code the real one runs, so that the RSS grows by the data alone.
PEAK_SCRIPT = r"""
import gc, os, re, sys
from cowmem import workloads

def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+) kB", f.read()).group(1)) * 1024

n = int(sys.argv[1])
gc.collect()
for name in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:
        workloads.DATA_KINDS[name].build(1000)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        data = workloads.DATA_KINDS[name].build(n)
        os.write(1, f"{name} {status('VmHWM') - base}\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_estimates_cover_the_real_peak_memory_within_a_factor_two():
    n = 10**6
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n), *DATA_KINDS],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    peaks = {name: int(peak) for name, peak in (line.split() for line in out.splitlines())}
    assert list(peaks) == list(DATA_KINDS)
    for name, peak in peaks.items():
        assert peak <= estimate_bytes(name, n), name
        # Hash tables grow in powers of two, so the real peak per element
        # varies with n; an estimate off by more than 2x is a wrong number.
        assert DATA_KINDS[name].bytes_per_element <= 2 * peak / n, name


def test_estimate_is_linear_in_n():
    for name, kind in DATA_KINDS.items():
        fixed = estimate_bytes(name, 0)
        assert estimate_bytes(name, 10**8) == fixed + math.ceil(kind.bytes_per_element * 10**8)


# --- measuring named pairs ---

def copied_in(report, obj) -> set:
    """The pages of ``obj``'s memory (``memory_ranges``) that the child copied."""
    page = report.page_size
    found = pages(report.copied_ranges, page) & pages(memory_ranges(obj), page)
    assert report.regions["data"] == len(found) * page
    return found


def refcount_pages(objects, page: int) -> set:
    """The pages holding the reference counts (the first word at id(x)) of ``objects``."""
    return {id(x) // page for x in objects}


def shape_pages(arr: np.ndarray, page: int) -> set:
    """The pages of an array's shape and strides: one small block of the C heap.

    An access that allocates there (a reduction's iterator, a copy's new
    array) may write a block on the same page.  Its address is numpy's
    ``PyArrayObject_fields.dimensions``, after the object header, the data
    pointer and ``nd``.
    """
    shape = ctypes.c_void_p.from_address(id(arr) + 32).value
    assert list((ctypes.c_ssize_t * arr.ndim).from_address(shape)) == list(arr.shape)
    return pages([(shape, shape + 2 * arr.ndim * np.dtype(np.intp).itemsize)], page)


# Every access starts by taking a reference to the data object itself: the
# page of its header is written, and copied unless the child had already
# copied that page (it shares it with other small objects).

def test_ndarray_sum_only_reads_the_buffer():
    arr = build("ndarray", 10**6)
    report = measure("ndarray", "sum", 10**6, prebuilt=arr)
    page = report.page_size
    copied = copied_in(report, arr)
    assert not copied & pages([(arr.ctypes.data, arr.ctypes.data + arr.nbytes)], page)
    assert copied <= refcount_pages([arr], page) | shape_pages(arr, page)


def test_list_same_int_iterate_copies_at_most_the_page_of_its_one_int():
    data = build("list_same_int", 10**6)
    report = measure("list_same_int", "iterate", 10**6, prebuilt=data)
    # int 1's reference count is written, from 3.12 not even that (small
    # ints are immortal); the list's storage is only read.
    one = [] if IMMORTAL_SMALL_INTS else [data[0]]
    assert copied_in(report, data) <= refcount_pages([data, *one], report.page_size)


def test_list_int_iterate_copies_the_pages_of_its_ints():
    n = 200_000
    data = build("list_int", n)
    report = measure("list_int", "iterate", n, prebuilt=data)
    page = report.page_size
    assert report.pfn_guard
    # Iterating takes a reference to every element: a write to its
    # reference count.  The list's storage is only read.
    written = refcount_pages(data[SMALL_INTS:], page)
    also = refcount_pages([data, *([] if IMMORTAL_SMALL_INTS else data[:SMALL_INTS])], page)
    copied = copied_in(report, data)
    assert copied <= written | also
    assert len(written - copied) <= SHARED_PAGES
    assert 28 <= report.regions["data"] / n <= 40


GC_FREEZE_SCRIPT = r"""
import gc, json, struct
from cowmem import workloads

n = 20_000
data = workloads.build("list_of_lists", n)
plain = workloads.measure("list_of_lists", "gc_collect", n, prebuilt=data)
frozen = workloads.measure("list_of_lists", "gc_collect", n, prebuilt=data, gc_freeze=True)
page = plain.page_size

def copied(report):
    return {p for start, stop in report.copied_ranges for p in range(start // page, (stop - 1) // page + 1)}

headers = {(id(x) - 2 * struct.calcsize("P")) // page for x in data}   # the GC header, just before id(x)
print(json.dumps({"headers": len(headers), "missed": len(headers - copied(plain)),
                  "unobserved": plain.unobserved["data"] // page, "frozen": len(headers & copied(frozen)),
                  "freeze_count": gc.get_freeze_count()}))
"""


def test_gc_freeze_spares_the_gc_headers_and_is_undone():
    # In a fresh interpreter: in this long-lived, fragmented heap the lists
    # share pages with objects the measuring makes after gc.freeze() (not
    # frozen, so collected and written).
    done = subprocess.run([sys.executable, "-c", GC_FREEZE_SCRIPT], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["freeze_count"] == 0   # measure() unfroze
    # A collection writes the GC header of every tracked object it traverses:
    # each header page is copied, unless a neighbour on it was written first,
    # before the baseline, which the report counts as unobserved.  Frozen
    # objects are not traversed: only pages they share with others are.
    assert found["headers"] >= 20_000 * 56 // 4096   # a list [i] is a 56-byte block, GC header included
    assert found["missed"] <= found["unobserved"]
    assert found["frozen"] <= SHARED_PAGES


def test_ndarray_shared_write_copies_nothing_unlike_a_private_array():
    n = 10**6
    private, shared = build("ndarray", n), build("ndarray_shared", n)
    private_report = measure("ndarray", "write", n, prebuilt=private)
    shared_report = measure("ndarray_shared", "write", n, prebuilt=shared)
    page = private_report.page_size
    buffer = pages([(private.ctypes.data, private.ctypes.data + private.nbytes)], page)
    header = refcount_pages([private], page) | shape_pages(private, page)
    # Every page of the private buffer is written and copied; nothing of the shared one.
    assert buffer <= copied_in(private_report, private) <= buffer | header
    assert copied_in(shared_report, shared) <= refcount_pages([shared], page) | shape_pages(shared, page)


def test_measure_refuses_a_prebuilt_object_of_another_size():
    with pytest.raises(ValueError, match="prebuilt has 10 elements"):
        measure("list_int", "len", 11, prebuilt=list(range(10)))


def count_items() -> int:
    return sum(isinstance(x, Item) for x in gc.get_objects())


def test_measure_unfreezes_and_drops_the_data_when_the_child_fails(monkeypatch):
    def failing(access, **kwargs):
        raise CowmemError("the child failed")

    monkeypatch.setattr(samples, "measure_fork", failing)
    before = count_items()
    with pytest.raises(CowmemError) as info:
        measure("list_of_instances", "iterate", 1000, gc_freeze=True)
    assert gc.get_freeze_count() == 0
    # The exception, still held here with its traceback, keeps no instance.
    assert info.value is not None and count_items() == before


def test_measure_keeps_no_data_after_success():
    before = count_items()
    measure("list_of_instances", "iterate", 1000)
    assert count_items() == before


@pytest.mark.parametrize("data", ["list_int", "ndarray", "dict_int"])
def test_none_touches_nothing_of_the_data(data):
    # Not even its reference count: the access is not handed the data.  In a
    # fresh interpreter, so that no other object shares the data's pages (in
    # this long-lived, fragmented heap a neighbour may be written).
    import subprocess
    code = f"from cowmem import workloads; print(workloads.measure({data!r}, 'none', 10**5).regions['data'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout) == 0
