"""Facts about the environment a measurement runs in, as numbers asv can store.

Copies depend on the exact interpreter (interned strings were immortal in
CPython 3.12.0 to 3.12.6 only), the build (free-threaded or not), the
libraries and the kernel.  Versions are encoded as one number,
``major * 10**6 + minor * 10**3 + patch`` (CPython 3.12.1 -> 3012001, Linux
6.18.0 -> 6018000), so that they sort and compare as numbers.

Run as a script by any interpreter, cowmem installed or not
(``python3.12 -I cowmem/facts.py``), it prints that interpreter's exact
version and executable: how ``scripts/suite`` names each environment.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import sysconfig
from importlib import metadata
from typing import Optional, Tuple

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
THP_MODES = {"never": 0, "madvise": 1, "always": 2}
"""Transparent huge page modes as numbers, in the kernel's order of eagerness."""

_RELEASE = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def release(version: str) -> Tuple[int, int, int]:
    """The leading ``(major, minor, patch)`` of a version, missing parts 0.

    ``"3.0.0rc1"`` -> (3, 0, 0); ``"6.18.0-1-amd64"`` -> (6, 18, 0); ``"2.4"`` -> (2, 4, 0).
    """
    match = _RELEASE.match(version.strip())
    if match is None:
        raise ValueError(f"not a version number: {version!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


def version_number(version: str) -> int:
    """``version`` as ``major * 10**6 + minor * 10**3 + patch``; ValueError if a part exceeds 999."""
    major, minor, patch = release(version)
    if minor > 999 or patch > 999:
        raise ValueError(f"{version!r} does not fit major * 10**6 + minor * 10**3 + patch")
    return major * 10**6 + minor * 10**3 + patch


def free_threaded() -> bool:
    """Whether this interpreter is a free-threaded (no GIL) build, as ``python3.14t`` is."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def python_version() -> str:
    """This interpreter's exact version, ``t`` appended for a free-threaded build: ``3.12.1``, ``3.14.0t``."""
    return platform.python_version() + ("t" if free_threaded() else "")


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution (``numpy``, ``pandas``...), None if absent; imports nothing."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def kernel_release() -> str:
    """The running kernel's release, e.g. ``6.18.0-1-amd64``."""
    return platform.release()


def thp_mode(path: str = THP_ENABLED) -> Optional[str]:
    """The transparent huge page mode (``never``, ``madvise``, ``always``), None without THP."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    chosen = re.search(r"\[(\w+)\]", text)
    return chosen.group(1) if chosen else None


def page_size() -> int:
    """Bytes in a base page."""
    return os.sysconf("SC_PAGE_SIZE")


def pfns_readable() -> bool:
    """Whether pagemap shows frame numbers to this process (CAP_SYS_ADMIN), which cowmem's guard needs."""
    from ._linux.probe import zero_page_frame   # numpy: imported only when asked
    return zero_page_frame() != 0


if __name__ == "__main__":
    print(python_version(), os.path.realpath(sys.executable))
