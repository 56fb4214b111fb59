"""Copy benchmarks for your own asv suite: what a forked child copies of your data.

Subclass :class:`Copies` in a file of your suite's ``benchmarks/``::

    from cowmem.asv import Copies

    class CacheCopies(Copies):
        def build(self):                 # runs in the parent, before the children are forked
            return mypkg.load_cache()
        def access_lookup(self, cache):  # runs in a forked child, once per measurement
            for key in KEYS:
                cache.get(key)
        def access_scan(self, cache):
            sum(cache.values())

asv then finds three benchmarks, each parametrized by ``access`` (one value
per ``access_NAME`` method, in the order defined):

- ``CacheCopies.track_data_mib``: MiB copied inside the data's own memory;
- ``CacheCopies.track_child_mib``: MiB copied anywhere in the child;
- ``CacheCopies.track_bytes_per_element``: bytes copied inside the data per
  element (``len(data)`` elements unless ``elements`` says otherwise).

These names (``Copies``, ``build``, ``access_*``, ``regions``, the three
``track_`` names) are a public contract, kept stable.  Each combination is
measured in ``children`` (3) forked children: asv stores the median as the
result, with its quartiles and confidence interval, and with ``asv run
--record-samples`` the samples themselves.

cowmem must be installed in asv's environments (see docs/asv.md).
"""

from __future__ import annotations

import abc
import itertools
import math
import sys
import traceback
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from .meter import Regions
from .samples import CHILDREN, DATA, Samples, measure_samples

__all__ = ["Copies", "NotApplicable", "Failed", "unpack", "samples"]

MIB = 1 << 20


# --- what setup_cache hands each combination's process (pickled by asv) ---

class Measured(NamedTuple):
    """One combination's samples, and the data's element count (None when it has no len)."""

    samples: Samples
    elements: Optional[int]


class NotApplicable(NamedTuple):
    """A combination that cannot be measured here; asv shows it as n/a."""

    reason: str


class Failed(NamedTuple):
    """A combination whose measurement failed; its benchmark fails with this message."""

    message: str


Outcome = Union[Measured, NotApplicable, Failed]

ACCESS_PREFIX = "access_"


def unpack(outcome: Any, what: str) -> Any:
    """A stored measurement; asv's n/a (NotImplementedError) or a failure (RuntimeError) for the others."""
    if isinstance(outcome, NotApplicable):
        raise NotImplementedError(outcome.reason)
    if isinstance(outcome, Failed):
        raise RuntimeError(f"measuring {what} failed: {outcome.message}")
    return outcome


def samples(values: Iterable[float]) -> Dict[str, Any]:
    """Values measured once each (``number`` 1) as asv takes them: it stores their median and spread."""
    return {"samples": [float(v) for v in values], "number": 1}


def _error(exc: BaseException, where: str) -> Failed:
    lines = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return Failed(f"{where}: {lines}")


def _still_abstract(cls: type) -> bool:
    # The ABC machinery computes __abstractmethods__ only after
    # __init_subclass__ has run, so look at the attributes themselves.
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls))


def _access_names(cls: type) -> List[str]:
    """The NAME of every access_NAME method, in definition order, base classes first."""
    names: List[str] = []
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            access = name[len(ACCESS_PREFIX):]
            if name.startswith(ACCESS_PREFIX) and callable(value) and access not in names:
                names.append(access)
    return names


class Copies(abc.ABC):
    """Base class of a copy benchmark: ``build`` the data once, measure each ``access_*`` in forked children.

    Define ``build(self)`` and one ``access_NAME(self, data)`` per access;
    optionally ``regions(self, data)`` (the object whose memory is "the
    data", default the built object itself) and ``elements(self, data)``
    (the count behind bytes per element, default ``len(data)``).

    ``build`` runs once per environment and commit, in asv's
    ``setup_cache``, and every combination is measured there, each in
    ``children`` forked children.  An error in ``build`` fails this class's
    benchmarks, an error in an access (or a child that crashes or overruns
    ``child_timeout`` seconds) fails that access's, each with the message;
    ``NotImplementedError`` raised by ``build`` makes them n/a.
    """

    children: int = CHILDREN
    """Forked children per combination (at least 3 for a median with a spread)."""
    child_timeout: float = 60.0
    """Seconds one child may take before it is killed and its combination fails."""
    build_timeout: float = 600.0
    """Seconds ``build`` and locating the data may take (asv's setup_cache timeout adds the children's)."""

    param_names: List[str] = ["access"]
    params: List[List[Any]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _still_abstract(cls):
            return
        if "setup_cache" in vars(cls):
            raise TypeError(f"{cls.__qualname__} defines setup_cache: Copies measures there; "
                            f"put the set-up in build() instead")
        if cls.children < CHILDREN:
            raise TypeError(f"{cls.__qualname__}.children is {cls.children}: at least {CHILDREN}, "
                            f"for a median and a spread")
        if "params" not in vars(cls):
            names = _access_names(cls)
            if not names:
                raise TypeError(f"{cls.__qualname__} defines no access_NAME(self, data) method")
            cls.params = [names]
        cls.setup_cache = _setup_cache_for(cls)

    @abc.abstractmethod
    def build(self) -> Any:
        """The data, built in the parent before the children are forked."""

    def regions(self, data: Any) -> Any:
        """The object whose memory counts as the data (``track_data_mib``); default: ``data`` itself."""
        return data

    def elements(self, data: Any) -> int:
        """How many elements ``data`` has, for ``track_bytes_per_element``; default ``len(data)``."""
        return len(data)

    def access(self, *params: Any) -> Optional[Callable[[Any], Any]]:
        """The function a child runs on the data for one parameter combination.

        Default: the ``access_NAME`` method named by the ``access``
        parameter.  None: the child does nothing, not even take the data
        (the cost of measuring itself).
        """
        return getattr(self, ACCESS_PREFIX + params[self.param_names.index("access")])

    def gc_freeze(self, *params: Any) -> bool:
        """Whether the parent calls ``gc.freeze()`` before forking for this combination; default no."""
        return False

    def measure_all(self) -> Dict[Tuple[Any, ...], Outcome]:
        """Build the data and measure every parameter combination: what setup_cache stores."""
        combinations = list(itertools.product(*self.params))
        try:
            data = self.build()
        except NotImplementedError as exc:
            return dict.fromkeys(combinations, NotApplicable(str(exc) or f"{type(self).__name__}.build: n/a here"))
        except Exception as exc:
            return dict.fromkeys(combinations, _error(exc, f"{type(self).__name__}.build() raised"))
        try:
            located = Regions({DATA: self.regions(data)})
        except Exception as exc:
            return dict.fromkeys(combinations, _error(exc, "locating the data's memory failed"))
        try:
            elements: Optional[int] = self.elements(data)
        except TypeError:
            elements = None   # no len(): bytes per element is n/a
        outcomes: Dict[Tuple[Any, ...], Outcome] = {}
        for combination in combinations:
            try:
                measured = measure_samples(self.access(*combination), data, located, children=self.children,
                                           gc_freeze=self.gc_freeze(*combination), timeout=self.child_timeout)
            except Exception as exc:
                outcomes[combination] = _error(exc, "the child failed")
            else:
                outcomes[combination] = Measured(measured, elements)
        return outcomes

    def setup(self, outcomes: Dict[Tuple[Any, ...], Outcome], *params: Any) -> None:
        label = ", ".join(f"{k}={v}" for k, v in zip(self.param_names, params))
        self.measured: Measured = unpack(outcomes[params], f"{type(self).__name__} ({label})")

    def track_data_mib(self, outcomes: Dict[Tuple[Any, ...], Outcome], *params: Any) -> Dict[str, Any]:
        """MiB the access made the kernel copy inside the data's own memory (median over the children)."""
        return samples(b / MIB for b in self.measured.samples.data_bytes)

    track_data_mib.unit = "MiB"  # type: ignore[attr-defined]

    def track_child_mib(self, outcomes: Dict[Tuple[Any, ...], Outcome], *params: Any) -> Dict[str, Any]:
        """MiB the access made the kernel copy anywhere in the child: the data and the interpreter's own pages."""
        return samples(b / MIB for b in self.measured.samples.child_bytes)

    track_child_mib.unit = "MiB"  # type: ignore[attr-defined]

    def track_bytes_per_element(self, outcomes: Dict[Tuple[Any, ...], Outcome],
                                *params: Any) -> Union[Dict[str, Any], float]:
        """Bytes copied inside the data per element: independent of the size, the easiest to compare."""
        if not self.measured.elements:
            print("n/a: the data has no elements to divide by (len() failed or is 0; define elements())",
                  file=sys.stderr)
            return math.nan
        return samples(b / self.measured.elements for b in self.measured.samples.data_bytes)

    track_bytes_per_element.unit = "bytes"  # type: ignore[attr-defined]


def _setup_cache_for(cls: type) -> Callable[[Copies], Dict[Tuple[Any, ...], Outcome]]:
    """A setup_cache of ``cls``'s own.

    asv shares one cache between all benchmarks whose setup_cache has the
    same source file and line; an inherited one would give every subclass
    the first one's measurements.  This function's source, as ``inspect``
    finds it through ``__wrapped__``, is the class's own definition, so the
    key is unique per class and the benchmark's version follows the class's code.
    """
    def setup_cache(self: Copies) -> Dict[Tuple[Any, ...], Outcome]:
        return self.measure_all()

    setup_cache.__wrapped__ = cls  # type: ignore[attr-defined]
    setup_cache.__module__ = cls.__module__
    setup_cache.__qualname__ = f"{cls.__qualname__}.setup_cache"
    combinations = math.prod(len(values) for values in cls.params)
    setup_cache.timeout = cls.build_timeout + combinations * cls.children * cls.child_timeout  # type: ignore[attr-defined]
    return setup_cache
