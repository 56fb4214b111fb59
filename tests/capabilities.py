"""What this machine can do, for tests that need more than Linux and fork.

``needs(name)`` marks a test to be skipped, with the reason shown by
``pytest -ra``, where the capability is missing; ``require(name)`` does the
same from inside a fixture.  Each capability is probed once per session.
On the project's own machine (root, so frame numbers, userfaultfd and the
page-fault tracepoints; THP in madvise mode; Debian's Chromium; the npm
registry or its packages cached) none is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Callable, Dict, Optional

import pytest


def _frames() -> Optional[str]:
    from cowmem._linux.probe import pagemap_facts

    if pagemap_facts().frames_readable:
        return None
    return "page frame numbers are unreadable here (they need root: CAP_SYS_ADMIN)"


def _userfaultfd() -> Optional[str]:
    from cowmem import uffd
    from cowmem.errors import ExplainUnavailableError

    try:
        os.close(uffd.open_write_protect_fd())
    except ExplainUnavailableError as exc:
        return str(exc)
    return None


def _thp() -> Optional[str]:
    from cowmem._linux.buffers import huge_page_size
    from cowmem._linux.probe import pagemap_facts

    if not huge_page_size():
        return "transparent huge pages are off (THP 'never')"
    if pagemap_facts().exclusive_per_page is None:
        return "the kernel made no transparent huge page when asked (madvise)"
    return None


def _chromium() -> Optional[str]:
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    return "needs Debian's chromium and chromium-driver (scripts/test installs them as root)"


def _registry() -> Optional[str]:
    from cowmem.publish import vendor

    cache = vendor.default_vendor_cache()
    if all((cache / copy.package.tarball).is_file() for copy in vendor.LOCAL_COPIES.values()):
        return None  # every package is cached: the registry is not needed
    npm = shutil.which("npm")
    if npm is None:
        return "needs npm, to fetch the site's libraries from the npm registry"
    try:
        done = subprocess.run([npm, "ping", "--silent"], capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer `npm ping` within 60 s"
    return None if done.returncode == 0 else "the npm registry is unreachable (`npm ping` failed)"


def _tracefs() -> Optional[str]:
    from reference import faults

    return faults.missing()


PROBES: Dict[str, Callable[[], Optional[str]]] = {
    "frames": _frames, "userfaultfd": _userfaultfd, "thp": _thp,
    "chromium": _chromium, "registry": _registry, "tracefs": _tracefs,
}


@functools.lru_cache(maxsize=None)
def missing(name: str) -> Optional[str]:
    """Why capability ``name`` is missing here, or None when it is available."""
    return PROBES[name]()


def needs(*names: str) -> pytest.MarkDecorator:
    """A skipif mark: skipped, with the reason, unless every capability named is available."""
    reasons = [reason for reason in map(missing, names) if reason]
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


def require(name: str) -> None:
    """In a fixture: skip every test that uses it, with the reason, when ``name`` is missing."""
    reason = missing(name)
    if reason:
        pytest.skip(reason)
