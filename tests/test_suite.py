"""The asv suite itself: ``asv check``, one real run of the whole suite, ``asv publish``.

The run uses the current interpreter (``-E existing:same``) at a small size
and writes its results, the machine file and the site into a temporary
directory, never into the repository or the user's home.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import math
import mmap
import os
import platform
import re
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from asv.util import load_json

from cowmem import PAGE_SIZE, workloads

ROOT = Path(__file__).resolve().parents[1]
SIZE = 50_000  # elements per data kind, the default: the whole run takes about a minute
MACHINE = "cowmem-test"
MIB = 1 << 20

Combination = Tuple[object, ...]


def asv(args: List[str], workdir: Path) -> subprocess.CompletedProcess:
    """Run asv with the temporary config; HOME is the temporary dir (asv's machine file goes there)."""
    env = dict(os.environ, HOME=str(workdir), COWMEM_BENCH_SIZE=str(SIZE))
    return subprocess.run([sys.executable, "-m", "asv", *args, "--config", str(workdir / "asv.conf.json")],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def assert_ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of asv.conf.json whose paths point at the repository, and results at a temporary dir."""
    work = tmp_path_factory.mktemp("asv")
    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), env_dir=str(work / "env"),
                results_dir=str(work / "results"), html_dir=str(work / "html"))
    (work / "asv.conf.json").write_text(json.dumps(conf))
    assert_ok(asv(["machine", "--yes", "--machine", MACHINE], work))
    return work


@pytest.fixture(scope="module")
def stored(workdir: Path) -> Dict[str, Dict[str, Dict[Combination, object]]]:
    """Run the whole suite once; column ("result", "samples", ...) -> benchmark -> combination -> value."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert_ok(asv(["run", "-E", "existing:same", "--machine", MACHINE, "--set-commit-hash", head,
                   "--record-samples", "--show-stderr"], workdir))
    [path] = (workdir / "results" / MACHINE).glob(f"{head[:8]}-existing*.json")
    data = json.loads(path.read_text())
    found: Dict[str, Dict[str, Dict[Combination, object]]] = {}
    for name, row in data["results"].items():
        columns = dict(zip(data["result_columns"], row))
        params = [[ast.literal_eval(p) for p in values] for values in columns["params"]]
        combinations = list(itertools.product(*params))
        for column in ("result", "samples"):
            values = columns.get(column) or [None] * len(combinations)
            found.setdefault(column, {})[name] = dict(zip(combinations, values))
    return found


@pytest.fixture(scope="module")
def results(stored: Dict[str, Dict[str, Dict[Combination, object]]]) -> Dict[str, Dict[Combination, object]]:
    """Benchmark name -> parameter combination -> the stored result (the median of the samples)."""
    return stored["result"]


def copies(results: Dict[str, Dict[Combination, object]], metric: str) -> Dict[Combination, object]:
    """(data, access, gc) -> value, over every per-kind class's ``metric``."""
    merged: Dict[Combination, object] = {}
    for name, values in results.items():
        if name.endswith(f".{metric}") and all(len(c) == 3 and c[0] in workloads.DATA_KINDS for c in values):
            assert not set(values) & set(merged), f"{name} repeats a data kind"
            merged.update(values)
    return merged


def test_asv_check(workdir: Path) -> None:
    assert_ok(asv(["check", "-E", "existing:same"], workdir))


def test_every_kind_has_one_class_measuring_what_applies(results: Dict[str, Dict[Combination, object]]) -> None:
    # asv stores a number, NaN for n/a (NotImplementedError in setup), None for a failure.
    for metric in ("track_data_mib", "track_child_mib", "track_bytes_per_element"):
        values = copies(results, metric)
        # Each kind's own class measures what applies but `none` (the ground truth's zero-page case
        # measures the measuring); bench_gc the tracked kinds' collection after gc.freeze().
        expected = {(data, access, "plain") for data in workloads.DATA_KINDS for access in workloads.accesses_for(data)
                    if access != "none"}
        expected |= {(data, "gc_collect", "freeze") for data in workloads.tracked_kinds()}
        assert set(values) == expected
        for (data, access, gc), value in values.items():
            assert isinstance(value, float), f"{metric} {data} x {access} ({gc}) failed"
            missing = workloads.DATA_KINDS[data].missing()
            assert math.isnan(value) == (missing is not None), (metric, data, access, gc, missing)
            assert math.isnan(value) or value >= 0


def test_copy_results_are_the_median_of_three_children(stored: Dict[str, Dict[str, Dict[Combination, object]]]) -> None:
    checked = 0
    for name, values in stored["result"].items():
        if not name.rsplit(".", 1)[1] in ("track_data_mib", "track_child_mib", "track_bytes_per_element",
                                          "track_copied_pages", "track_kib_copied_per_write",
                                          "track_data_mib_by_first_write", "track_mib_per_worker"):
            continue
        for combination, value in values.items():
            if isinstance(value, float) and not math.isnan(value):
                kept = stored["samples"][name][combination]
                assert kept is not None and len(kept) >= 3, (name, combination, kept)
                assert value == pytest.approx(statistics.median(kept)), (name, combination)
                checked += 1
    assert checked > 300


def data_bytes(results: Dict[str, Dict[Combination, object]], data: str, access: str) -> float:
    return copies(results, "track_data_mib")[(data, access, "plain")] * MIB


def test_seed_list_int_iterate_copies_every_int(results: Dict[str, Dict[Combination, object]]) -> None:
    # Each int is one 32-byte pymalloc block (a 28-byte header rounded up to
    # 16-byte alignment); iterating writes every refcount, so every page of
    # ints is copied.  The small ints 0..256 may live outside the heap (in
    # the interpreter's static data since 3.11), pool headers add under 2 %
    # (48 bytes per 4 KiB pool on 3.9, per 16 KiB pool later).
    per_element = copies(results, "track_bytes_per_element")[("list_int", "iterate", "plain")]
    assert 32 * (SIZE - 257) / SIZE <= per_element <= 32 * 1.02
    assert data_bytes(results, "list_int", "iterate") == pytest.approx(per_element * SIZE)


def test_seed_ndarray_sum_copies_nothing(results: Dict[str, Dict[Combination, object]]) -> None:
    # The reduction only reads the buffer.  The data's memory also holds the
    # array object's header, whose refcount the child writes: one page.
    assert data_bytes(results, "ndarray", "sum") <= PAGE_SIZE


def test_seed_list_same_int_iterate_copies_about_nothing(results: Dict[str, Dict[Combination, object]]) -> None:
    # One int object referenced SIZE times: at most its own page (before
    # 3.12, where small ints are immortal) is written; the list's pointer
    # array is only read.
    assert data_bytes(results, "list_same_int", "iterate") <= PAGE_SIZE


def test_ground_truth_pages(results: Dict[str, Dict[Combination, object]]) -> None:
    values = results["bench_ground_truth.GroundTruth.track_copied_pages"]
    assert values, "no ground-truth result"
    for (buffer, written), pages in values.items():
        assert pages == written, f"{buffer}: wrote {written} pages, measured {pages}"


def thp_enabled() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def test_huge_page_write_copies_one_page_or_one_huge_page(results: Dict[str, Dict[Combination, object]]) -> None:
    # Linux 5.8 split a shared huge page on write and copy 4 KiB; before, 2 MiB.
    release = tuple(int(x) for x in platform.release().split(".")[:2])
    expected = PAGE_SIZE / 1024 if release >= (5, 8) else 2048.0
    values = results["bench_hugepages.HugePages.track_kib_copied_per_write"]
    for (written,), kib in values.items():
        if thp_enabled():
            assert kib == expected, f"{written} huge pages written: {kib} KiB per write"
        else:
            assert math.isnan(kib)


def test_size_variable_refuses_what_is_not_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("suite_common", ROOT / "benchmarks" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setenv("COWMEM_BENCH_SIZE", "100_000_000")
    assert common.bench_size() == 10**8
    for bad in ("0", "-5", "1e8", "lots"):
        monkeypatch.setenv("COWMEM_BENCH_SIZE", bad)
        with pytest.raises(ValueError, match=f"COWMEM_BENCH_SIZE must be a whole number.*not '{bad}'"):
            common.bench_size()


def test_publish(workdir: Path, results: Dict[str, Dict[Combination, object]]) -> None:
    assert_ok(asv(["publish"], workdir))
    assert (workdir / "html" / "index.html").is_file()


def test_explain_breakdown_names_the_cause(results: Dict[str, Dict[Combination, object]]) -> None:
    values = results["bench_explain.Causes.track_data_mib_by_first_write"]
    for (pair, cause), value in values.items():
        assert isinstance(value, float) and not math.isnan(value), f"{pair} {cause} failed or n/a"

    def share(pair: str, cause: str) -> float:
        total = sum(v for (p, _), v in values.items() if p == pair)
        return values[(pair, cause)] / total

    # The question's answer, named: iterating writes each int's refcount;
    # gc.collect() writes every container's GC header; a numpy write is payload.
    # Every page but a few (at most 8 of ~780) that the ints share with
    # other objects at the pools' edges, where a neighbour may write first.
    refcounts = values[("list_int x iterate", "refcount")]
    assert (sum(v for (p, _), v in values.items() if p == "list_int x iterate") - refcounts) * MIB \
        <= 8 * PAGE_SIZE and refcounts > 0
    assert share("list_of_lists x gc_collect", "gc_header") >= 0.9
    # ... all but the array object's own block (at most two pages), first
    # written for its refcount or by a neighbour sharing its page.
    others = sum(v for (p, c), v in values.items() if p == "ndarray x write" and c != "payload")
    assert values[("ndarray x write", "payload")] > 0 and others * MIB <= 2 * PAGE_SIZE


def encoded(version: Tuple[int, int, int]) -> int:
    return version[0] * 10**6 + version[1] * 10**3 + version[2]


def test_platform_facts_are_recorded_as_numbers(results: Dict[str, Dict[Combination, object]]) -> None:
    versions = results["bench_platform.Versions.track_version"]
    assert versions[("python",)] == encoded(sys.version_info[:3])
    assert versions[("numpy",)] == encoded(tuple(int(p) for p in np.__version__.split(".")[:3]))
    for library in ("pandas", "pyarrow"):
        try:
            module = importlib.import_module(library)
        except ImportError:
            assert math.isnan(versions[(library,)])
        else:
            assert versions[(library,)] == encoded(tuple(int(p) for p in module.__version__.split(".")[:3]))
    kernel = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", os.uname().release).groups())
    assert versions[("kernel",)] == encoded(kernel)
    facts = {name.rsplit(".", 1)[1]: values[()] for name, values in results.items()
             if name.startswith("bench_platform.Platform.")}
    assert facts["track_free_threaded"] == int(bool(sysconfig.get_config_var("Py_GIL_DISABLED")))
    assert facts["track_page_size"] == mmap.PAGESIZE
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    assert facts["track_thp_mode"] == {"never": 0, "madvise": 1, "always": 2}[re.search(r"\[(\w+)\]", thp).group(1)]
    assert facts["track_pfns_readable"] == (1 if os.geteuid() == 0 else 0)
