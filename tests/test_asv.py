"""cowmem.asv.Copies: what asv discovers from a subclass, and what its measurement stores.

asv's own discovery (asv_runner) is run on a benchmark directory written
here; the measurements are real forked children, on data whose copied
bytes follow from the case (every int of a list iterated is copied: 32
bytes each; a numpy array summed copies none of its buffer).
"""

from __future__ import annotations

import inspect
import math
import statistics
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from asv_runner.benchmarks._base import get_setup_cache_key
from asv_runner.discovery import disc_benchmarks

from cowmem import PAGE_SIZE
from cowmem.asv import Copies, Failed, Measured, NotApplicable, samples

N = 100_000
MIB = 1 << 20

SUITE = '''
import numpy as np
from cowmem.asv import Copies


class CacheCopies(Copies):
    """A cache of floats."""

    def build(self):
        return np.ones(100)

    def access_scan(self, cache):
        cache.sum()

    def access_lookup(self, cache):
        cache[3]


class OtherCopies(Copies):
    def build(self):
        return [1.0] * 10

    def access_scan(self, cache):
        sum(cache)
'''


@pytest.fixture
def discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """asv's benchmarks from a benchmark directory holding SUITE: name -> Benchmark."""
    root = tmp_path / "bench_own"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "copies.py").write_text(SUITE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {b.name: b for b in disc_benchmarks(str(root))}
    for name in [m for m in sys.modules if m == "bench_own" or m.startswith("bench_own.")]:
        del sys.modules[name]


def test_asv_finds_the_three_metrics_per_subclass_and_not_the_base(discovered: dict) -> None:
    assert set(discovered) == {f"copies.{cls}.{metric}" for cls in ("CacheCopies", "OtherCopies")
                               for metric in ("track_data_mib", "track_child_mib", "track_bytes_per_element")}
    units = {name.rsplit(".", 1)[1]: b.unit for name, b in discovered.items()}
    assert units == {"track_data_mib": "MiB", "track_child_mib": "MiB", "track_bytes_per_element": "bytes"}
    cache = discovered["copies.CacheCopies.track_data_mib"]
    assert cache.param_names == ["access"]
    assert cache.params == [["'scan'", "'lookup'"]]   # asv's repr of the values, in definition order
    assert discovered["copies.OtherCopies.track_child_mib"].params == [["'scan'"]]
    for benchmark in discovered.values():
        assert benchmark.func.__doc__ and benchmark.type == "track"


def test_each_subclass_has_its_own_setup_cache(discovered: dict) -> None:
    # asv shares a cache between benchmarks whose setup_cache key (file and line) is the same.
    keys = {name.split(".")[1]: b.setup_cache_key for name, b in discovered.items()}
    assert keys["CacheCopies"] != keys["OtherCopies"]
    assert keys["CacheCopies"].startswith("copies:")
    source, line = inspect.getsourcelines(sys.modules["bench_own.copies"].CacheCopies)
    assert keys["CacheCopies"] == f"copies:{line}"


def test_a_subclass_without_an_access_is_refused() -> None:
    with pytest.raises(TypeError, match="defines no access_NAME"):
        type("NoAccess", (Copies,), {"build": lambda self: [1]})


def test_fewer_than_three_children_are_refused() -> None:
    with pytest.raises(TypeError, match="children is 2: at least 3"):
        type("Two", (Copies,), {"build": lambda self: [1], "access_x": lambda self, d: None, "children": 2})


def test_a_subclass_that_defines_setup_cache_is_refused() -> None:
    with pytest.raises(TypeError, match="defines setup_cache"):
        type("Own", (Copies,), {"build": lambda self: [1], "access_x": lambda self, d: None,
                                "setup_cache": lambda self: None})


class ListAndArray(Copies):
    """N ints in a list and N floats in an array; the data is the array alone."""

    def build(self):
        return {"ints": list(range(N)), "floats": np.ones(N)}

    def regions(self, data):
        return data["floats"]

    def elements(self, data):
        return N

    def access_iterate_ints(self, data):
        for _ in data["ints"]:
            pass

    def access_write_floats(self, data):
        data["floats"][:] = 2.0

    def access_fail(self, data):
        raise KeyError("no such entry")


@pytest.fixture(scope="module")
def measured() -> dict:
    return ListAndArray().measure_all()


def test_every_access_is_measured_in_three_children(measured: dict) -> None:
    assert set(measured) == {("iterate_ints",), ("write_floats",), ("fail",)}
    for access in ("iterate_ints", "write_floats"):
        outcome = measured[(access,)]
        assert isinstance(outcome, Measured) and outcome.elements == N
        assert len(outcome.samples.data_bytes) == len(outcome.samples.child_bytes) == 3


def test_the_data_is_what_regions_names(measured: dict) -> None:
    # Writing the array copies every page of its buffer (8 * N bytes, which
    # straddle one page more than they fill), and at most the page of its
    # header besides.
    floats = measured[("write_floats",)].samples
    for data_bytes in floats.data_bytes:
        assert 8 * N <= data_bytes <= 8 * N + 2 * PAGE_SIZE
    # Iterating the list writes each int's refcount: 32-byte blocks, every
    # page of them copied but for the small ints 0..256 (outside the heap
    # from 3.11, or sharing pages) and pool headers (under 2 %).  They are
    # copied in the child, not in the data: the array's buffer is untouched.
    ints = measured[("iterate_ints",)].samples
    for data_bytes, child_bytes in zip(ints.data_bytes, ints.child_bytes):
        assert data_bytes <= PAGE_SIZE
        assert child_bytes >= 32 * (N - 257) * 0.98


def test_an_access_that_raises_fails_only_its_own_combination_with_the_childs_message(measured: dict) -> None:
    failed = measured[("fail",)]
    assert isinstance(failed, Failed)
    assert "KeyError" in failed.message and "no such entry" in failed.message
    bench = ListAndArray()
    with pytest.raises(RuntimeError, match="access=fail.*no such entry"):
        bench.setup(measured, "fail")
    bench.setup(measured, "write_floats")   # the others are unaffected


def test_the_tracks_return_the_samples_for_asv(measured: dict) -> None:
    bench = ListAndArray()
    bench.setup(measured, "write_floats")
    floats = measured[("write_floats",)].samples
    assert bench.track_data_mib(measured, "write_floats") == {"samples": [b / MIB for b in floats.data_bytes],
                                                              "number": 1}
    assert bench.track_child_mib(measured, "write_floats")["samples"] == [b / MIB for b in floats.child_bytes]
    per_element = bench.track_bytes_per_element(measured, "write_floats")["samples"]
    assert per_element == [b / N for b in floats.data_bytes]
    assert 8 <= statistics.median(per_element) <= 8 + 2 * PAGE_SIZE / N


def test_bytes_per_element_is_na_without_a_len(measured: dict) -> None:
    bench = ListAndArray()
    outcomes = {("x",): Measured(measured[("write_floats",)].samples, None)}
    bench.setup(outcomes, "x")
    assert math.isnan(bench.track_bytes_per_element(outcomes, "x"))
    assert samples([1, 2]) == {"samples": [1.0, 2.0], "number": 1}


class FailingBuild(Copies):
    def build(self):
        raise OSError("the cache file is missing")

    def access_read(self, data):
        pass


class UnavailableBuild(Copies):
    def build(self):
        raise NotImplementedError("needs the GPU build")

    def access_read(self, data):
        pass


def test_a_build_that_raises_fails_the_class_with_its_message() -> None:
    outcomes = FailingBuild().measure_all()
    assert list(outcomes) == [("read",)]
    [failed] = outcomes.values()
    assert isinstance(failed, Failed)
    assert "FailingBuild.build() raised" in failed.message and "OSError: the cache file is missing" in failed.message
    with pytest.raises(RuntimeError, match="the cache file is missing"):
        FailingBuild().setup(outcomes, "read")


def test_not_implemented_in_build_is_na_with_the_reason() -> None:
    outcomes = UnavailableBuild().measure_all()
    assert outcomes == {("read",): NotApplicable("needs the GPU build")}
    with pytest.raises(NotImplementedError, match="needs the GPU build"):
        UnavailableBuild().setup(outcomes, "read")


def test_the_setup_cache_key_follows_the_class_not_the_base() -> None:
    assert get_setup_cache_key(ListAndArray().setup_cache) != get_setup_cache_key(FailingBuild().setup_cache)
    assert "ListAndArray" in textwrap.dedent(inspect.getsource(ListAndArray().setup_cache))
