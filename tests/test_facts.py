"""cowmem.facts: versions as numbers, and the exact interpreter version scripts/suite names environments by."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cowmem import facts

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("version, expected", [
    ("3.12.1", (3, 12, 1)), ("3.0.0rc1", (3, 0, 0)), ("6.18.44-1-amd64", (6, 18, 44)), ("2.4", (2, 4, 0)),
    ("26.0.1", (26, 0, 1)), ("3.15.0a3", (3, 15, 0)), (" 1.26.4\n", (1, 26, 4)), ("7", (7, 0, 0))])
def test_release_is_the_leading_three_numbers(version, expected):
    assert facts.release(version) == expected


@pytest.mark.parametrize("version, number", [
    ("3.12.1", 3_012_001), ("3.9.18", 3_009_018), ("6.18.0", 6_018_000), ("2.4.6", 2_004_006),
    ("26.0.1", 26_000_001), ("3.14.0t", 3_014_000)])
def test_version_number_is_major_minor_patch_in_thousands(version, number):
    assert facts.version_number(version) == number


@pytest.mark.parametrize("bad", ["", "abc", "v1.2"])
def test_a_version_that_is_not_one_is_refused(bad):
    with pytest.raises(ValueError, match="not a version number"):
        facts.release(bad)


def test_a_part_of_1000_or_more_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        facts.version_number("1.1000.0")


def test_python_version_is_exact_and_marks_a_free_threaded_build():
    expected = "%d.%d.%d" % sys.version_info[:3]
    assert facts.python_version() in (expected, expected + "t")
    assert facts.python_version().endswith("t") == facts.free_threaded()
    assert facts.python_version().startswith(platform.python_version())


def test_run_as_a_script_it_needs_nothing_installed():
    # -I: isolated, no site-packages, no script directory on sys.path: cowmem is not importable.
    done = subprocess.run([sys.executable, "-I", str(ROOT / "cowmem" / "facts.py")],
                          capture_output=True, text=True, check=True)
    version, executable = done.stdout.split()
    assert version == facts.python_version()
    assert Path(executable) == Path(sys.executable).resolve()


def test_installed_version_reads_the_metadata():
    import numpy
    assert facts.installed_version("numpy") == numpy.__version__
    assert facts.installed_version("no-such-distribution-cowmem") is None


def test_thp_mode_is_the_bracketed_word(tmp_path):
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")
    assert facts.thp_mode(str(enabled)) == "madvise"
    assert facts.thp_mode(str(tmp_path / "missing")) is None
