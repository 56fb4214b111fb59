"""The pytest plugin, run on test files of its own with pytest's pytester.

The expected pages are computed in the inner tests' fixtures from id()
and numpy's buffer addresses, never by cowmem: a reference count is the
first word of every object, so reading an object writes the page at
``id(obj) // PAGE_SIZE``.  Every inner run is a pytest process of its
own: what its tests build and fork must not change the heap, the
collector's state or the modules of the process running these tests.
"""

import json
import mmap
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from cowmem.errors import ExplainUnavailableError

pytest_plugins = ["pytester"]

PAGE_SIZE = mmap.PAGESIZE
N = 10**5
KIB = 1024


def explain_available() -> bool:
    from cowmem import uffd

    try:
        uffd.open_write_protect_fd()
    except ExplainUnavailableError:
        return False
    return True


# The inner project's fixtures.  Each writes the pages it expects the body
# to write to expected.json, computed from the objects' addresses.
CONFTEST = f"""
    import gc
    import json
    import pathlib

    import numpy as np
    import pytest

    N = {N}
    PAGE_SIZE = {PAGE_SIZE}


    def note(name, pages):
        path = pathlib.Path("expected.json")
        known = json.loads(path.read_text()) if path.exists() else {{}}
        known[name] = sorted(pages)
        path.write_text(json.dumps(known))


    @pytest.fixture
    def numbers():
        # Past the small ints, which live in libpython's data, shared.
        data = list(range(1000, 1000 + N))
        note("numbers", {{id(x) // PAGE_SIZE for x in data}} | {{id(data) // PAGE_SIZE}})
        return data


    @pytest.fixture
    def array():
        data = np.full(N, 2.0)        # written: every page present in the parent
        stride = PAGE_SIZE // data.itemsize
        base = data.__array_interface__["data"][0]
        note("array_strided", {{(base + i * PAGE_SIZE) // PAGE_SIZE for i in range(len(data[::stride]))}})
        block = (id(data), id(data) + type(data).__basicsize__ - 1)
        note("array_object", {{a // PAGE_SIZE for a in block}})
        return data


    @pytest.fixture
    def lists():
        data = [[i] for i in range(N)]
        # A list's GC header: the two words before id() (no pre-header).
        note("lists_gc", {{(id(x) - 16) // PAGE_SIZE for x in data}})
        yield data


    @pytest.fixture
    def frozen_lists():
        data = [[i] for i in range(N)]
        gc.collect()
        gc.freeze()
        yield data
        gc.unfreeze()
"""


@pytest.fixture
def project(pytester):
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    return pytester


def expected(pytester, name):
    return set(json.loads((pytester.path / "expected.json").read_text())[name])


def copied_pages(text: str) -> int:
    """The pages of the first "copied N bytes (P pages" of a failure message."""
    return int(re.search(r"copied [\d,]+ bytes \(([\d,]+) page", text).group(1).replace(",", ""))


def unobserved_pages(text: str, name: str) -> int:
    found = re.search(rf"Pages of the fixtures already the child's when the body began\b.*?: .*?\b{name} (\d+)", text)
    return int(found.group(1)) if found else 0


def no_process_left(tag: str = "") -> None:
    """No child of this process is left, and no process anywhere with ``tag`` in its command line."""
    assert psutil.Process().children(recursive=True) == []
    if tag:
        running = [p.info for p in psutil.process_iter(["pid", "cmdline", "status"])
                   if tag in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
        assert running == []


@pytest.fixture(autouse=True)
def leaves_nothing_running():
    yield
    no_process_left()


ITERATE_NUMBERS = """
    import pytest

    @pytest.mark.limit_copied("64 KiB")
    def test_iterate(numbers):
        for _ in numbers:
            pass
"""


# --- the limit --------------------------------------------------------------

def test_iterating_a_list_of_ints_fails_naming_int_refcounts(project):
    project.makepyfile(test_ints=ITERATE_NUMBERS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    # Every page holding one of the ints (about 32 bytes each) is copied,
    # but for the few the child had written before the baseline.
    pages = expected(project, "numbers")
    assert len(pages) >= N * 28 // PAGE_SIZE
    assert copied_pages(text) >= len(pages) - 8
    assert f"its limit is {64 * KIB:,} bytes" in text
    assert "Copied pages per mapping: [anon]" in text
    if explain_available():
        share = re.search(r"Explained: [\d,]+ pages copied, ([\d.]+) % by reference-count writes "
                          r"to int objects", text)
        assert share and float(share.group(1)) >= 90
        assert "Hold such values in a numpy array" in text
    else:
        assert "not explained by cause" in text


def test_summing_a_numpy_array_passes(project):
    # The array's buffer is 196 pages: copied, it would be over 256 KiB (64
    # pages) for the whole child, and over 8 KiB inside the array, which
    # leaves its object's block (at most two pages) to its reference count.
    project.makepyfile(test_sum="""
        import pytest

        @pytest.mark.limit_copied("256 KiB")
        def test_sum(array):
            assert array.sum() == 2.0 * len(array)

        @pytest.mark.limit_copied("8 KiB", regions=["array"])
        def test_sum_in_the_array(array):
            assert array.sum() == 2.0 * len(array)
    """)
    assert N * 8 > 64 * PAGE_SIZE
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_an_empty_body_copies_only_what_calling_it_takes(project):
    # Calling a function writes a few pages (its frame, its code object's
    # counters: 3 to 7 measured); the plugin's own work in the child (a
    # process group, faulthandler and its timer thread, about 20 pages
    # measured inside the snapshots) runs outside them.
    project.makepyfile(test_empty="""
        import pytest

        @pytest.mark.parametrize("run", range(5))
        @pytest.mark.limit_copied("48 KiB")
        def test_empty(run):
            pass
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=5)


def test_writing_an_array_copies_the_pages_written(project):
    project.makepyfile(test_write="""
        import pytest

        @pytest.mark.limit_copied(0, regions=["array"])
        def test_write(array):
            array[::512] = 1.0
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    written, block = expected(project, "array_strided"), expected(project, "array_object")
    assert 512 * 8 == PAGE_SIZE
    # The pages written, and the array object's own (its reference count).
    assert len(written) - unobserved_pages(text, "array") <= copied_pages(text) <= len(written | block)
    if explain_available():
        assert re.search(r"Explained \(the pages inside the fixtures\): [\d,]+ pages copied, [\d.]+ % "
                         r"by writes to the payload of ndarray objects", text)
        assert "writes into the ndarray objects' own data" in text


def test_regions_count_only_the_named_fixtures(project):
    project.makepyfile(test_regions="""
        import pytest

        @pytest.mark.limit_copied("8 KiB", regions=["array"])
        def test_the_array_is_untouched(numbers, array):
            for _ in numbers:
                pass

        @pytest.mark.limit_copied("64 KiB", regions=["numbers"])
        def test_the_numbers_are_copied(numbers, array):
            for _ in numbers:
                pass
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "limit_copied('64 KiB', regions=['numbers']): the test body copied" in text
    assert "of the parent's memory inside the fixtures numbers" in text
    assert "The whole child copied" in text
    pages = expected(project, "numbers")
    assert len(pages) - unobserved_pages(text, "numbers") <= copied_pages(text) <= len(pages)


def test_gc_header_copies_are_explained_and_gc_freeze_helps(project):
    # A collection in the child writes the GC header of each of the 10**5
    # lists: a page for every 64 of them, where 256 KiB is 64 pages.
    project.makepyfile(test_gc="""
        import gc
        import pytest

        @pytest.mark.limit_copied("256 KiB", regions=["lists"])
        def test_collect(lists):
            gc.collect()

        @pytest.mark.limit_copied("256 KiB", regions=["frozen_lists"])
        def test_collect_frozen(frozen_lists):
            gc.collect()
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED test_gc.py::test_collect - *"])
    headers = expected(project, "lists_gc")
    assert len(headers) >= N * 56 // PAGE_SIZE
    assert copied_pages(text) >= len(headers) - unobserved_pages(text, "lists")
    if explain_available():
        assert re.search(r"by GC-header writes to list objects", text)
        assert "Call gc.freeze() in the parent" in text
    else:
        assert "call gc.freeze() in the parent if the collector is the cause" in text


def test_explain_never_reports_the_counts_only(project):
    project.makepyfile(test_never=ITERATE_NUMBERS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--limit-copied-explain=never")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "Not explained (--limit-copied-explain=never)." in text
    assert "Explained" not in text and "A second run" not in text


# --- a body that fails, crashes or hangs --------------------------------------

def test_a_failing_body_shows_the_childs_traceback(project):
    project.makepyfile(test_fail="""
        import pytest

        def first(numbers):
            return numbers[0]

        @pytest.mark.limit_copied("1 MiB")
        def test_fail(numbers):
            print("printed in the child")
            assert first(numbers) == -1
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # pytest's own rendering, made in the child: the source, the rewritten
    # assertion, the captured output.
    result.stdout.fnmatch_lines([
        ">       assert first(numbers) == -1",
        "E       assert 1000 == -1",
        "E        +  where 1000 = first([1000, 1001, 1002, 1003, 1004, 1005, ...])",
        "test_fail.py:*: AssertionError",
        "*Captured stdout call*",
        "printed in the child",
    ])


def test_a_crashing_body_is_a_failure_with_the_childs_stack(project):
    project.makepyfile(test_crash="""
        import ctypes
        import os
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_segfault():
            ctypes.string_at(0)

        @pytest.mark.limit_copied("1 MiB")
        def test_exit():
            os._exit(3)
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*the test body crashed: the child was killed by SIGSEGV*",
        "*The child's stack, from faulthandler:",
        "Fatal Python error: Segmentation fault",
        '  File "*test_crash.py", line * in test_segfault',
        "  (the frames that called the test: pytest's and cowmem's)",
    ])
    result.stdout.fnmatch_lines(["*the test body ended its forked child with exit status 3*"])


def test_a_hanging_body_is_stopped_with_what_it_started(project):
    tag = f"cowmem-test-{uuid.uuid4().hex}"
    project.makeini("[pytest]\nlimit_copied_timeout = 1\n")
    project.makepyfile(test_hang=f"""
        import subprocess
        import sys
        import time
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_hang():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{tag}"])
            time.sleep(600)

        @pytest.mark.limit_copied("1 MiB", timeout=0.5)
        def test_hang_marker_timeout():
            time.sleep(600)
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*the test body ran longer than its timeout of 1 s*its child was killed with every process it started",
        "*The child's stack, from faulthandler:",
        "Timeout (0:00:01)!",
        '  File "*test_hang.py", line * in test_hang',
    ])
    result.stdout.fnmatch_lines(["*the test body ran longer than its timeout of 0.5 s*"])
    no_process_left(tag)


def test_what_a_body_started_is_stopped_however_the_body_ends(project):
    # Each body starts a process that would sleep for ten minutes, then
    # passes, fails, or goes over its limit (and is run a second time).
    tag = f"cowmem-test-{uuid.uuid4().hex}"
    project.makepyfile(test_started=f"""
        import subprocess
        import sys
        import pytest

        def start():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{tag}"])

        @pytest.mark.limit_copied("1 MiB")
        def test_passes():
            start()

        @pytest.mark.limit_copied("1 MiB")
        def test_fails():
            start()
            assert 0

        @pytest.mark.limit_copied("64 KiB")
        def test_over_its_limit(numbers):
            start()
            for _ in numbers:
                pass
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=2)
    no_process_left(tag)


# --- pytest's machinery around a forked body ----------------------------------

def test_warnings_output_properties_and_outcomes_come_back(project):
    project.makepyfile(test_machinery="""
        import logging
        import sys
        import warnings
        import pytest

        @pytest.fixture
        def state(tmp_path):
            memory = []
            yield memory
            # The body's files are the parent's; its memory is not.
            print("teardown:", (tmp_path / "out").read_text(), memory)

        @pytest.mark.limit_copied("1 MiB")
        def test_body(state, tmp_path, record_property):
            warnings.warn("warned in the child")
            print("printed in the child")
            print("to stderr in the child", file=sys.stderr)
            logging.getLogger("inner").warning("logged in the child")
            record_property("where", "child")
            (tmp_path / "out").write_text("written in the child")
            state.append("appended in the child")
            assert 0

        @pytest.mark.limit_copied("1 MiB")
        def test_returns():
            return 42

        @pytest.mark.limit_copied("1 MiB")
        def test_skips():
            pytest.skip("skipped in the child")

        @pytest.mark.limit_copied("1 MiB")
        @pytest.mark.xfail(raises=ZeroDivisionError, strict=True)
        def test_xfails():
            1 / 0
    """)
    for capture in ("fd", "sys", "tee-sys"):
        result = project.runpytest_subprocess("-p", "no:cacheprovider", f"--capture={capture}", "-rs",
                                   "--junitxml=junit.xml", "-o", "junit_family=legacy")
        result.assert_outcomes(failed=1, passed=1, skipped=1, xfailed=1, warnings=2)
        result.stdout.fnmatch_lines([
            "*Captured stdout call*", "printed in the child",
            "*Captured stderr call*", "to stderr in the child",
            "*Captured log call*", "WARNING  inner:test_machinery.py:* logged in the child",
            "*Captured stdout teardown*", "teardown: written in the child []",
        ])
        result.stdout.fnmatch_lines(["*test_machinery.py:*: UserWarning: warned in the child"])
        result.stdout.fnmatch_lines(["*PytestReturnNotNoneWarning: Test functions should return None, "
                                     "but test_machinery.py::test_returns returned <class 'int'>."])
        result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_machinery.py:*: skipped in the child"])
        assert '<property name="where" value="child"' in (project.path / "junit.xml").read_text()


def test_capsys_in_the_body(project):
    project.makepyfile(test_capsys="""
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_capsys(capsys):
            print("one")
            assert capsys.readouterr().out == "one\\n"
            print("two")
            assert 0
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured stdout call*", "two"])


def test_a_passing_body_runs_once_and_a_failing_one_twice(project):
    project.makepyfile(test_runs="""
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_small():
            with open("small", "a") as f:
                f.write("run\\n")

        @pytest.mark.limit_copied("64 KiB")
        def test_large(numbers):
            with open("large", "a") as f:
                f.write("run\\n")
            for _ in numbers:
                pass
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)
    assert (project.path / "small").read_text() == "run\n"
    assert (project.path / "large").read_text() == "run\nrun\n"   # once more to explain


def test_limit_copied_off_runs_the_body_in_the_pytest_process(project):
    project.makepyfile(test_off="""
        import os
        import pytest

        PID = os.getpid()

        @pytest.mark.limit_copied("4 KiB")
        def test_here(numbers):
            for _ in numbers:
                pass
            assert os.getpid() == PID
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider", "--limit-copied-off").assert_outcomes(passed=1)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(failed=1)


def test_a_test_not_run_by_pytest_pyfunc_call_fails(project):
    project.makepyfile(test_unittest="""
        import unittest
        import pytest

        class Case(unittest.TestCase):
            @pytest.mark.limit_copied("1 MiB")
            def test_method(self):
                pass
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*limit_copied was not applied: this test was not run through "
                                 "pytest_pyfunc_call*"])


# --- how it runs: xdist, -x, no cache provider, platforms, options ------------

LIMITS = ITERATE_NUMBERS + """
    @pytest.mark.limit_copied("256 KiB")
    def test_array(array):
        array.sum()

    @pytest.mark.limit_copied("64 KiB", regions=["numbers"])
    def test_inside_the_numbers(numbers):
        assert sum(numbers) > 0
"""


def test_with_pytest_xdist_workers(project):
    project.makepyfile(test_limits=LIMITS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert "created: 2/2 workers" in text
    # Each failure's own section, once per failing test: with CI set, pytest
    # also repeats the whole message in its short summary.
    sections = [line for line in text.splitlines() if line.startswith("limit_copied(")]
    assert len(sections) == 2 and all("the test body copied" in line for line in sections)
    # Python 3.12+ warns of forking a multi-threaded process: execnet's
    # thread in the worker, which the child never uses, is not reported.
    assert "multi-threaded" not in text


def test_exitfirst_stops_after_the_first_failure(project):
    project.makepyfile(test_limits=LIMITS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_a_platform_cowmem_cannot_measure_is_a_skip_before_the_fixtures(project):
    project.makeconftest(textwrap.dedent(CONFTEST) + textwrap.dedent("""
        import cowmem._linux.pagemap

        # No pagemap here, as on a kernel without /proc/PID/pagemap.
        cowmem._linux.pagemap.PAGEMAP_PATH = "/nonexistent/pagemap"

        @pytest.fixture
        def side_effect():
            pathlib.Path("fixture-ran").write_text("")
    """))
    project.makepyfile(test_platform="""
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_measured(side_effect):
            pass

        def test_unmarked():
            pass
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1, passed=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *: limit_copied: cowmem cannot measure here: "
                                 "cannot open /nonexistent/pagemap (No such file or directory)*"])
    assert not (project.path / "fixture-ran").exists()


def test_the_options_are_in_help_and_the_marker_listed(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines([
        "limit_copied: limits on what a test body copies (cowmem):",
        "  --limit-copied-timeout=SECONDS",
        "  --limit-copied-explain={auto,never}",
        "  --limit-copied-off*",
    ])
    result.stdout.fnmatch_lines(["  limit_copied_timeout (string):"])
    result.stdout.fnmatch_lines(["  limit_copied_explain (string):"])
    pytester.runpytest_subprocess("--markers").stdout.fnmatch_lines(
        ["@pytest.mark.limit_copied(limit, *, regions=None, timeout=None): run the test's body in a forked child*"])


@pytest.mark.parametrize("args, message", [
    ('"64 KB"', "'64 KB' is ambiguous*write '64 KiB' for 65,536 bytes"),
    ('"64"', "cannot read '64' as a size*"),
    ("-1", "a size cannot be negative: -1"),
    ("1.5", "a size is an int (bytes) or a text like '64 KiB', not float"),
    ("", "*missing 1 required positional argument: 'limit'"),
    ('"1 MiB", regions="numbers"', "regions must be a list of fixture names*"),
    ('"1 MiB", regions=["number"]', "regions names 'number', not a fixture of this test*"),
    ('"1 MiB", timeout=0', "timeout must be a positive number of seconds, not 0"),
    ('"1 MiB", region=["numbers"]', "*got an unexpected keyword argument 'region'"),
])
def test_a_bad_marker_is_a_usage_error_of_that_test(project, args, message):
    project.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.limit_copied({args})
        def test_bad(numbers):
            pass

        def test_other():
            pass
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines([f"usage error in @pytest.mark.limit_copied(*): {message}*"])


@pytest.mark.parametrize("args, message", [
    (["--limit-copied-timeout=0"], "*argument --limit-copied-timeout: must be a positive number of seconds, not '0'"),
    (["-o", "limit_copied_timeout=soon"], "*ini option limit_copied_timeout must be a positive number*"),
    (["-o", "limit_copied_explain=maybe"], "*ini option limit_copied_explain must be auto or never, not 'maybe'"),
])
def test_bad_options_are_usage_errors(pytester, args, message):
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_plugin_imports_no_numpy_until_a_marked_test_runs(pytester):
    pytester.makepyfile(test_plain="""
        import sys

        def test_plain():
            assert "numpy" not in sys.modules
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_without_explain_mode_the_fixtures_still_say_where(project):
    project.makeconftest(textwrap.dedent(CONFTEST) + textwrap.dedent("""
        import cowmem.uffd
        from cowmem.errors import ExplainUnavailableError

        # As without root: no userfaultfd.
        def unavailable():
            raise ExplainUnavailableError("userfaultfd needs CAP_SYS_PTRACE here")

        cowmem.uffd.open_write_protect_fd = unavailable
    """))
    project.makepyfile(test_plain=ITERATE_NUMBERS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "Explained" not in text
    result.stdout.fnmatch_lines([
        "A second run of the body, with the fixtures located, copied * pages inside the fixtures: numbers *",
        "Not explained by cause: explain mode is unavailable: userfaultfd needs CAP_SYS_PTRACE here.",
        "Hint: most copies are in 'numbers', a list of Python objects: reading its elements writes their "
        "reference counts*",
    ])
    pages = expected(project, "numbers")
    copied_in_numbers = int(re.search(r"pages inside the fixtures: numbers ([\d,]+)", text).group(1).replace(",", ""))
    assert len(pages) - 8 <= copied_in_numbers <= len(pages)


# --- the hint, chosen from what was found ---------------------------------------

def test_a_sum_copies_nothing_of_an_array_but_its_own_header():
    import numpy as np

    from cowmem import measure_fork
    from cowmem._linux.pagemap import page_span
    from cowmem.locate import object_block
    from cowmem.meter import Regions, copied_page_numbers
    from cowmem.pytest_plugin.limit import _headers_only

    array = np.full(N, 2.0)
    regions = Regions({"array": array})
    header = page_span([object_block(array)])
    start, stop = array.ctypes.data, array.ctypes.data + array.nbytes
    whole = set(range(-(-start // PAGE_SIZE), stop // PAGE_SIZE))  # the buffer's whole pages
    assert whole
    for _ in range(5):
        report = measure_fork(array.sum, regions=regions, cross_checks=False)
        inside = set(copied_page_numbers(report).tolist()) & set(regions.pages["array"].tolist())
        # The sum reads the buffer and never writes it: no page wholly the
        # buffer's is copied.  The region's other pages (the header, which the
        # sum takes a reference to; the shape block; the buffer's partial first
        # and last pages) share pages with the heap's other chunks, which the
        # child may write: one such page was copied in a fresh-clone CI run.
        assert not inside & whole
        assert _headers_only(report, regions, {"array": array}) == (
            bool(inside) and inside <= set(header.tolist()))


def test_the_hint_follows_the_findings():
    from types import SimpleNamespace

    from cowmem.pytest_plugin.limit import Findings
    from cowmem.pytest_plugin.message import hint

    numbers = list(range(10))
    counted = SimpleNamespace(regions={"numbers": PAGE_SIZE, "other": 0}, explanation=None)
    assert hint(Findings(None, {"numbers": numbers}, headers_only=True), None).startswith(
        "the only pages copied inside the fixtures hold the fixture objects' own headers")
    assert hint(Findings(counted, {"numbers": numbers, "other": 1}), None).startswith(
        "most copies are in 'numbers', a list of Python objects")
    assert hint(Findings(None, {"numbers": numbers}), counted).startswith("most copies are in 'numbers'")
    assert hint(Findings(None, {}), None).startswith("explain mode (--limit-copied-explain=auto")


def test_ctrl_c_stops_the_body_and_what_it_started(pytester):
    tag = f"cowmem-test-{uuid.uuid4().hex}"
    pytester.makepyfile(test_interrupted=f"""
        import subprocess
        import sys
        import time
        import pytest

        @pytest.mark.limit_copied("1 MiB")
        def test_hang():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{tag}"])
            time.sleep(600)
    """)
    # SIGINT as the terminal sends it, to pytest (the body has a process group of its own).
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_interrupted.py"],
                           cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def started():
            return [p for p in psutil.process_iter(["cmdline"]) if tag in " ".join(p.info["cmdline"] or [])]
        while not started():   # no limit: the run fails alone if the body never starts
            assert run.poll() is None, run.stdout.read().decode()
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        out = run.communicate()[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in out
    no_process_left(tag)
