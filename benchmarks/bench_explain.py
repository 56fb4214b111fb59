"""Why the data's pages are copied: the first write behind each, by cause.

Explain mode (userfaultfd write-protect) for the combinations that answer
the question; the copied MiB inside the data, split by what the first write
to each page was (a reference count, a GC header, another header field, the
payload), each pair explained in three children.  n/a where userfaultfd is
unavailable.
"""

from cowmem import CAUSES, CowmemError, ExplainUnavailableError, workloads
from cowmem.asv import Failed, NotApplicable, samples, unpack
from cowmem.samples import CHILDREN

from .common import MIB, bench_size

PAIRS = [("list_int", "iterate"), ("list_int", "pickle"), ("list_interned_str", "iterate"),
         ("list_of_lists", "gc_collect"), ("list_of_instances", "iterate"), ("ndarray", "write")]


def _causes(size):
    """(data, access) -> cause -> bytes it explains in each of CHILDREN children, or why there are none."""
    outcomes = {}
    for data, access in PAIRS:
        try:
            explanations = [workloads.explain_in_data(data, access, size) for _ in range(CHILDREN)]
        except ExplainUnavailableError as exc:
            outcomes[(data, access)] = NotApplicable(str(exc))
        except CowmemError as exc:
            outcomes[(data, access)] = Failed(f"{type(exc).__name__}: {exc}")
        else:
            outcomes[(data, access)] = {cause: [e.causes[cause].pages * e.page_size for e in explanations]
                                        for cause in CAUSES}
    return outcomes


class Causes:
    params = [[f"{data} x {access}" for data, access in PAIRS], list(CAUSES)]
    param_names = ["pair", "cause"]
    unit = "MiB"

    def setup_cache(self):
        return _causes(bench_size())

    setup_cache.timeout = 600

    def setup(self, outcomes, pair, cause):
        data, _, access = pair.partition(" x ")
        self.bytes = unpack(outcomes[(data, access)], pair)[cause]

    def track_data_mib_by_first_write(self, outcomes, pair, cause):
        """MiB of the data's copied pages whose first write had this cause (median of the children)."""
        return samples(b / MIB for b in self.bytes)
