"""The ``limit_copied`` marker: what it takes, read and checked.

Imports nothing heavy: this runs at collection in every session where
cowmem is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from ..units import parse_size

NAME = "limit_copied"
SIGNATURE = "limit_copied(limit, *, regions=None, timeout=None)"
HELP = (f"{SIGNATURE}: run the test's body in a forked child (its fixtures set up in the "
        "pytest process) and fail the test when the body makes the kernel copy more than "
        "`limit` bytes of the parent's memory ('256 KiB', '1.5 MiB', or an int of bytes); "
        "regions=[fixture names] counts only the copies inside those fixtures' objects; "
        "timeout=seconds stops a body that hangs (default --limit-copied-timeout).")


@dataclass(frozen=True)
class Limit:
    """One test's limit, as its marker gives it."""

    limit: int                  # bytes
    written: str                # the limit as the marker wrote it, for messages
    regions: Tuple[str, ...]    # fixture names; () counts the whole child
    timeout: Optional[float]    # seconds; None: the session's default

    def describe(self) -> str:
        """The marker as written: ``limit_copied("64 KiB", regions=["cache"])``."""
        regions = f", regions={list(self.regions)!r}" if self.regions else ""
        return f"{NAME}({self.written}{regions})"


def read(args: Sequence[Any], kwargs: dict, fixturenames: Sequence[str]) -> Limit:
    """The Limit of a marker's arguments; ``fixturenames``: the test's fixtures.

    Raises TypeError or ValueError saying what is wrong.
    """
    return _read(*args, fixturenames=fixturenames, **kwargs)


def _read(limit: Any, *, regions: Optional[Sequence[str]] = None, timeout: Optional[float] = None,
          fixturenames: Sequence[str]) -> Limit:
    size = parse_size(limit)
    if regions is None:
        names: Tuple[str, ...] = ()
    elif isinstance(regions, str) or not all(isinstance(n, str) for n in regions):
        raise TypeError(f"regions must be a list of fixture names, e.g. regions=['cache'], not {regions!r}")
    else:
        names = tuple(dict.fromkeys(regions))
        if not names:
            raise ValueError("regions=[] names no fixture; leave it out to count the whole child")
        unknown = [n for n in names if n not in fixturenames]
        if unknown:
            raise ValueError(f"regions names {', '.join(map(repr, unknown))}, not a fixture of this test "
                             f"(its fixtures: {', '.join(sorted(fixturenames)) or 'none'})")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return Limit(size, repr(limit), names, None if timeout is None else float(timeout))
