"""The question's experiment under each multiprocessing start method.

Four workers, as in the question, each run one of the question's accesses
on the parent's data; the suite tracks what each worker costs: the pages its
access copied (``fork``), or its private memory beyond a worker started
without the data (``spawn``, ``forkserver``: the data is pickled to it).
``default`` follows the interpreter: ``fork`` on Linux up to CPython 3.13,
``forkserver`` from 3.14, which shows what that change costs the question;
it is the same measurement as the method it stands for, not another.
``spawn`` is left out: its workers, like forkserver's, each unpickle a copy
of the data, and each costs a fresh interpreter to start.
"""

from cowmem import UnknownNameError, experiment, workloads
from cowmem.workers import resolve_start_method, run_workers

from cowmem.asv import Failed, NotApplicable, samples, unpack

from .common import MIB, bench_size

WORKERS = 4
START_METHODS = ["fork", "forkserver", "default"]
# "data:access", one per case of the question (cowmem workers runs the same four).
CASES = {f"{case.data}:{case.access}": case for case in experiment.CASES}


def measure_workers(size):
    """(start method, case) -> bytes each worker cost, or why there are none."""
    outcomes = {}
    for name, case in CASES.items():
        data = None
        measured = {}   # the start method actually used -> its outcome
        for method in START_METHODS:
            try:
                used = resolve_start_method(method)
            except UnknownNameError as exc:
                outcomes[(method, name)] = NotApplicable(str(exc))
                continue
            if used not in measured:
                if data is None:
                    data = workloads.build(case.data, size)
                measured[used] = _measure(case, data, used)
            outcomes[(method, name)] = measured[used]
        del data  # before the next build
    return outcomes


def _measure(case, data, start_method):
    report = run_workers(workloads.ACCESSES[case.access].run, data, workers=WORKERS, start_method=start_method)
    failed = [w for w in (*report.workers, report.baseline) if w is not None and not w.ok]
    if failed:
        who = "the baseline worker" if failed[0].index < 0 else f"worker {failed[0].index}"
        return Failed(f"{who}: {failed[0].error}")
    return [w.cost_bytes for w in report.workers]


class Workers:
    """What each of four workers costs, by start method and question case: the workers are the samples."""

    params = [START_METHODS, list(CASES)]
    param_names = ["start_method", "case"]

    def setup_cache(self):
        size = bench_size()
        return size, measure_workers(size)

    # Sixteen runs of four workers; spawn and forkserver re-import numpy in each.
    setup_cache.timeout = 300 + 300 * bench_size() / 10**6

    def setup(self, cached, start_method, case):
        self.size, outcomes = cached
        self.costs = unpack(outcomes[(start_method, case)], f"{case} with {start_method}")

    def track_mib_per_worker(self, cached, start_method, case):
        """MiB per worker (median of the four): copied by its access (fork) or held beyond a data-less worker (others)."""
        return samples(cost / MIB for cost in self.costs)

    track_mib_per_worker.unit = "MiB"

    def track_bytes_per_element(self, cached, start_method, case):
        """The same per element of the data: independent of the size, easiest to compare."""
        return samples(cost / self.size for cost in self.costs)

    track_bytes_per_element.unit = "bytes"
