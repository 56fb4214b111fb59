"""Copies one access makes in a forked child, for every data kind x access x gc variant.

Each pair is measured once per environment, in ``setup_cache`` (one process
that builds each data kind once); the benchmarks below only report parts of
that measurement.  Pairs that do not apply show as n/a.
"""

from cowmem import workloads

from .common import MIB, bench_size, measure_pairs, unpack


class Copies:
    """Copy-on-write copies by data kind (``data``), access in the child and parent-side gc variant."""

    params = [list(workloads.DATA_KINDS), list(workloads.ACCESSES), list(workloads.GC_VARIANTS)]
    param_names = ["data", "access", "gc"]

    def setup_cache(self):
        return measure_pairs(bench_size())

    # One process measures all ~300 pairs: 10 minutes plus 1 ms per element,
    # ten times what they took at 10**6 elements on a loaded 2-core machine.
    # (Each child has its own deadline in cowmem as well.)
    setup_cache.timeout = 600 + bench_size() / 1000

    def setup(self, outcomes, data, access, gc):
        self.copies = unpack(outcomes[(data, access, gc)], f"{data} x {access} ({gc})")

    def track_data_mib(self, outcomes, data, access, gc):
        """MiB copied inside the data's own memory (its buffer or storage and its elements' headers)."""
        return self.copies.data_bytes / MIB

    track_data_mib.unit = "MiB"

    def track_child_mib(self, outcomes, data, access, gc):
        """MiB copied anywhere in the child: the data plus the interpreter's own pages."""
        return self.copies.child_bytes / MIB

    track_child_mib.unit = "MiB"

    def track_bytes_per_element(self, outcomes, data, access, gc):
        """Bytes copied inside the data per element: independent of the size, easiest to compare."""
        return self.copies.data_bytes / self.copies.size

    track_bytes_per_element.unit = "bytes"
