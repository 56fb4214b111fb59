"""The facts of each environment, as numbers in its results: exact versions, build, kernel, pages.

asv names an environment by what it was asked to install; these record what
the environment reports from inside, so that a results file answers "which
CPython patch release, which kernel" without the machine that made it.
Each is read once by ``cowmem.facts`` (no spread: a fact, not a measurement).

The names, a contract that cowmem's report and site read:

``bench_platform.Versions.track_version``, parameter ``component``:
    ``python`` (the interpreter's own version: 3.12.1 -> 3012001),
    ``numpy``, ``pandas``, ``pyarrow`` (the installed distribution; n/a when
    it is not installed), ``kernel`` (the running Linux release, 6.18.0 ->
    6018000).  Encoded ``major * 10**6 + minor * 10**3 + patch``; a
    pre-release counts as its release (3.15.0a3 -> 3015000).
``bench_platform.Platform.track_free_threaded``: 1 for a free-threaded build (3.14t), 0 otherwise.
``bench_platform.Platform.track_page_size``: bytes in a base page.
``bench_platform.Platform.track_thp_mode``: transparent huge pages, 0 never,
    1 madvise, 2 always (n/a where the kernel has none).
``bench_platform.Platform.track_pfns_readable``: 1 when pagemap shows frame
    numbers to the suite (root), which cowmem's check that a page is a new
    frame needs; 0 otherwise.
"""

import math
import sys

from cowmem import facts

COMPONENTS = ["python", "numpy", "pandas", "pyarrow", "kernel"]


def _version(component):
    if component == "python":
        return facts.python_version()
    if component == "kernel":
        return facts.kernel_release()
    return facts.installed_version(component)


class Versions:
    params = [COMPONENTS]
    param_names = ["component"]

    def setup(self, component):
        self.version = _version(component)
        if self.version is None:
            raise NotImplementedError(f"{component} is not installed in this environment")

    def track_version(self, component):
        """The component's version as major * 10**6 + minor * 10**3 + patch (3.12.1 -> 3012001)."""
        return facts.version_number(self.version)

    track_version.unit = "major*10**6 + minor*10**3 + patch"


class Platform:
    def track_free_threaded(self):
        """1 if this interpreter is a free-threaded build (no GIL, e.g. 3.14t), else 0."""
        return int(facts.free_threaded())

    track_free_threaded.unit = "0/1"

    def track_page_size(self):
        """Bytes in a base page."""
        return facts.page_size()

    track_page_size.unit = "bytes"

    def track_thp_mode(self):
        """Transparent huge pages: 0 never, 1 madvise, 2 always; n/a (NaN) where there are none."""
        mode = facts.thp_mode()
        if mode not in facts.THP_MODES:
            print(f"n/a: transparent huge page mode {mode!r} ({facts.THP_ENABLED})", file=sys.stderr)
            return math.nan
        return facts.THP_MODES[mode]

    track_thp_mode.unit = "0 never / 1 madvise / 2 always"

    def track_pfns_readable(self):
        """1 if pagemap shows page frame numbers here (CAP_SYS_ADMIN), which cowmem's new-frame check needs."""
        return int(facts.pfns_readable())

    track_pfns_readable.unit = "0/1"
