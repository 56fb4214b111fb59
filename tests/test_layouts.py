"""Object layouts are verified at first use; what fails verification is refused, clearly and lazily.

The checks run on every interpreter cowmem is tested on; a failed check is
simulated by giving cowmem a wrong fact, as a newer interpreter would.  The
locating runs in a forked helper, which inherits the patched fact.
"""

import collections
import os
import sys

import numpy as np
import pytest

import cowmem
from cowmem import PAGE_SIZE, layouts, measure_fork, verify
from cowmem.errors import CowmemError, UnverifiedLayoutError
from cowmem.locate import index_heap, memory_ranges

PAGE = PAGE_SIZE


def pages(start, stop):
    return set(range(start // PAGE, (stop - 1) // PAGE + 1))


@pytest.fixture(autouse=True)
def fresh_verification(monkeypatch):
    """Each test verifies anew (a patched fact must not meet a cached verdict)."""
    monkeypatch.setattr(verify, "_verified", {})


def test_every_fact_checks_out_on_this_interpreter():
    for fact in verify._CHECKS:
        verify.require(fact)


@pytest.mark.parametrize("fact, name, wrong", [
    ("the object header (ob_refcnt, ob_type)", "TYPE", 24),          # a free-threaded header
    ("the GC header", "GC_HEAD", 0),
    ("the pre-header", "PREHEADER_FLAGS", layouts.HAVE_GC),           # every container: a pre-header
    ("immortal objects", "IMMORTAL", not layouts.IMMORTAL),
    ("list", "LIST_ITEMS", layouts.LIST_ALLOCATED),
    ("dict", "DICT_KEYS", layouts.DICT_VALUES),
    ("set", "SET_TABLE", layouts.SET_MASK),
    ("collections.deque", "BLOCK_RIGHT", layouts.BLOCK_RIGHT - layouts.WORD),
    ("bytearray", "BYTEARRAY_BYTES", layouts.BYTEARRAY_ALLOC),
    ("str", "ASCII_HEADER", layouts.ASCII_HEADER + layouts.WORD),
    ("numpy.ndarray", "NDARRAY_DIMS", layouts.NDARRAY_DATA),
])
def test_a_wrong_fact_fails_its_check_and_names_it(monkeypatch, fact, name, wrong):
    monkeypatch.setattr(layouts, name, wrong)
    with pytest.raises(UnverifiedLayoutError) as info:
        verify.require(fact)
    assert info.value.fact == fact
    assert fact in str(info.value) and layouts.interpreter() in str(info.value)
    assert isinstance(info.value, CowmemError)


def test_instance_values_where_they_are_not(monkeypatch):
    if layouts.VALUES == "dict":
        pytest.skip(f"CPython {sys.version_info[:2]} keeps instance attributes in a dict object")
    monkeypatch.setattr(layouts, "VALUES", {"inline": "tagged"}.get(layouts.VALUES, "inline"))
    with pytest.raises(UnverifiedLayoutError, match="instance attribute values"):
        verify.require("instance attribute values")


@pytest.mark.parametrize("fact, name, wrong", [
    ("instance attribute values", "HT_CACHED_KEYS", layouts.HT_CACHED_KEYS - layouts.WORD),   # ht_qualname
    ("instance attribute values", "KEYS_USABLE", layouts.KEYS_NENTRIES),
    ("dict", "KEYS_NENTRIES", 0),                                                             # dk_refcnt
])
def test_a_wrong_fact_of_separate_values_arrays_fails_its_check(monkeypatch, fact, name, wrong):
    if layouts.VALUES not in ("preheader", "tagged"):
        pytest.skip(f"CPython {sys.version_info[:2]} keeps no values array sized by its class's keys")
    monkeypatch.setattr(layouts, name, wrong)
    with pytest.raises(UnverifiedLayoutError, match=fact):
        verify.require(fact)


def free_threaded_header(monkeypatch):
    """What a free-threaded build looks like to cowmem: ob_type is not at offset 8."""
    monkeypatch.setattr(layouts, "TYPE", 24)


def test_an_unverified_header_refuses_element_level_regions(monkeypatch):
    free_threaded_header(monkeypatch)
    data = list(range(1000, 2000))
    for locate in (lambda: memory_ranges(data), lambda: cowmem.Regions({"data": data}),
                   lambda: measure_fork(lambda: None, regions={"data": data}), index_heap):
        with pytest.raises(UnverifiedLayoutError, match=r"ob_type.*whole child, of address ranges and of buffers"):
            locate()


def test_an_unverified_header_still_counts_the_whole_child_ranges_and_buffers(monkeypatch):
    free_threaded_header(monkeypatch)
    buffer = bytearray(b"\x01") * (40 * PAGE)
    array = np.ones(40 * PAGE // 8)
    start = np.frombuffer(buffer, np.uint8).ctypes.data
    view = np.frombuffer(buffer, np.uint8)

    def access():
        view[::PAGE] = 2          # every page of the bytearray's buffer
        array[: PAGE // 8] = 2    # the array's first page

    report = measure_fork(access, regions={"range": (start, start + len(buffer)), "bytearray": buffer,
                                           "array": array})
    inner = len(pages(start + PAGE, start + len(buffer) - PAGE))
    assert report.regions["range"] // PAGE >= inner + 1
    assert report.regions["bytearray"] >= report.regions["range"]
    assert report.regions["array"] // PAGE >= 1
    assert report.copied_bytes >= report.regions["range"]
    # An array's dimensions are not placed without the layout: said, not dropped.
    assert report.unlocated["array"] == {"numpy.ndarray": 1}
    assert report.unlocated["range"] == {}


def test_explain_mode_needs_the_layouts_and_says_so(monkeypatch):
    free_threaded_header(monkeypatch)
    with pytest.raises(UnverifiedLayoutError, match="explain copies"):
        measure_fork(lambda: None, regions={"data": [1, 2, 3]}, explain=True)


def test_a_failed_container_check_refuses_only_that_container(monkeypatch):
    monkeypatch.setattr(layouts, "BLOCK_RIGHT", layouts.BLOCK_RIGHT - layouts.WORD)
    items = list(range(1000, 1100))
    assert memory_ranges(items)      # lists are still located
    with pytest.raises(UnverifiedLayoutError, match="collections.deque"):
        memory_ranges({"queue": collections.deque(items)})


def test_the_command_line_says_it_in_one_line(monkeypatch, capsys):
    from cowmem import cli
    free_threaded_header(monkeypatch)
    assert cli.main(["measure", "list_int", "len", "--size", "1000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cowmem measure: error: cowmem has not verified how ") and err.count("\n") == 1


def test_no_helper_is_left_behind():
    memory_ranges([1, 2, 3])
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.parametrize("address", [-8, 2 ** 63, 2 ** 64 - 8])
def test_reading_an_address_no_pointer_can_hold_is_an_oserror(address):
    """What a wrong fact reads as a pointer can be any word: the checks expect OSError, nothing else."""
    from cowmem.peek import SafeReader

    with SafeReader() as read:
        with pytest.raises(OSError):
            read.word(address)
