"""The exact versions an environment's results recorded, for the report and the upgrade page.

Two sources, both inside the results (never the machine that renders them):

- asv's own: the environment's ``python`` and pinned requirements
  (``virtualenv-py3.12.1-numpy2.2.6`` names ``python`` 3.12.1 and numpy
  2.2.6), and the machine's ``os`` from ``machine.json``;
- the suite's ``bench_platform`` benchmarks, which record facts as numbers
  (``Versions.track_version`` per ``component``, ``Platform.track_free_threaded``,
  ``track_page_size``, ``track_thp_mode``, ``track_pfns_readable``):
  versions encoded ``major * 10**6 + minor * 10**3 + patch``, the
  free-threaded build 0/1, the page size in bytes, the THP mode (0 never,
  1 madvise, 2 always), whether frame numbers were readable (0/1); n/a for a
  package that is not installed.

Results without a fact (such as those written before ``bench_platform``
existed) say "not recorded" for it, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from .results import Results, Run, display_param, is_measured, is_version

PLATFORM_MODULE = "bench_platform"
NOT_RECORDED = "not recorded"

_THP_MODES = {0: "never", 1: "madvise", 2: "always"}


@dataclass(frozen=True)
class Versions:
    """What one run recorded about its interpreter, packages and kernel, as display text."""

    python: str        # "3.12.1", or "3.12 (patch release not recorded)"
    build: str         # "GIL", "free-threaded" or NOT_RECORDED
    numpy: str
    pandas: str
    pyarrow: str
    kernel: str
    thp: str           # "madvise", ...
    page_size: str     # "4096 bytes"
    pfns: str          # "readable", "not readable"

    def rows(self) -> List[Tuple[str, str]]:
        """(label, text) in the order pages show them."""
        return [("CPython", self.python), ("build", self.build), ("numpy", self.numpy),
                ("pandas", self.pandas), ("pyarrow", self.pyarrow), ("kernel", self.kernel),
                ("THP", self.thp),
                ("page size", self.page_size), ("frame numbers", self.pfns)]


def platform_facts(results: Results, run: Run) -> Dict[str, Optional[float]]:
    """The run's ``bench_platform`` facts: name -> number (NaN: n/a, None: failed)."""
    facts: Dict[str, Optional[float]] = {}
    for (benchmark, combination), value in run.values.items():
        if not benchmark.startswith(PLATFORM_MODULE + "."):
            continue
        if len(combination) == 1:
            name = display_param(combination[0])
        else:
            name = benchmark.rsplit(".", 1)[-1]
        name = re.sub(r"^track_|_version$|_mode$", "", name.lower())
        facts[name] = value
    return facts


def decode_version(number: float) -> str:
    """``3012001`` -> ``"3.12.1"``."""
    whole = int(number)
    return f"{whole // 10**6}.{whole // 10**3 % 1000}.{whole % 1000}"


def versions_of(results: Results, run: Run) -> Versions:
    """Every fact the run recorded, as text; NOT_RECORDED for the missing ones."""
    facts = platform_facts(results, run)
    env = run.environment
    requirements = dict(env.requirements)

    def package(name: str) -> str:
        if name in facts:
            value = facts[name]
            if value is None:
                return "failed to record"
            return decode_version(value) if is_measured(value) else "not installed"
        pinned = requirements.get(name)
        if pinned:
            return pinned
        return "unpinned, " + NOT_RECORDED if name in requirements else NOT_RECORDED

    python = package("python")
    if python == NOT_RECORDED or python.startswith("unpinned"):
        python = env.python if is_version(env.python) and env.python.count(".") >= 2 else (
            f"{env.python} (patch release {NOT_RECORDED})" if is_version(env.python)
            else NOT_RECORDED)

    def fact(name: str, text: Mapping[int, str]) -> str:
        value = facts.get(name)
        if value is None or not is_measured(value):
            return NOT_RECORDED
        return text.get(int(value), f"unknown ({value:g})")

    build = fact("free_threaded", {0: "GIL", 1: "free-threaded"})
    if build == NOT_RECORDED and env.python.endswith("t") and is_version(env.python):
        build = "free-threaded"
    kernel = package("kernel")
    if kernel == NOT_RECORDED:
        os_name = results.machines.get(env.machine, {}).get("os")
        if os_name:
            kernel = f"{os_name} (asv's machine.json)"
    page = facts.get("page_size")
    return Versions(
        python=python, build=build, numpy=package("numpy"), pandas=package("pandas"),
        pyarrow=package("pyarrow"), kernel=kernel, thp=fact("thp", _THP_MODES),
        page_size=f"{int(page)} bytes" if page is not None and is_measured(page) else NOT_RECORDED,
        pfns=fact("pfns_readable", {0: "not readable (no CAP_SYS_ADMIN)", 1: "readable"}))


def exact_python(results: Results, run: Run) -> str:
    """The python a selector matches: asv's version, else the recorded one for a path.

    ``-E existing:...`` environments name an interpreter path, not a version;
    their ``bench_platform`` fact (when recorded) gives the version instead.
    """
    python = run.environment.python
    if is_version(python):
        return python
    value = platform_facts(results, run).get("python")
    return decode_version(value) if value is not None and is_measured(value) else python

