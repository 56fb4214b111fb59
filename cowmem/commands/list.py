"""``cowmem list``: the data kinds, the accesses, and which pairs apply."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the data kinds and accesses, and which pairs apply."


def run(args: argparse.Namespace) -> int:
    from .. import workloads

    kinds, accesses = workloads.DATA_KINDS, workloads.ACCESSES
    width = max(map(len, [*kinds, *accesses]))
    print("Data kinds (built in the parent from a size N):")
    for name, kind in kinds.items():
        missing = kind.missing()
        print(f"  {name:<{width}}  {kind.description}" + (f" (n/a here: {missing})" if missing else ""))
    print("\nAccesses (run in the child):")
    for name, access in accesses.items():
        print(f"  {name:<{width}}  {access.description}")
    print("\nPairs that apply (x), by data kind (rows) and access (columns):")
    names = list(accesses)
    print(f"  {'':<{width}}  " + " ".join(names))
    for data in kinds:
        marks = ("x" if workloads.applies(data, access) else "-" for access in names)
        print((f"  {data:<{width}}  " + " ".join(f"{m:^{len(n)}}" for m, n in zip(marks, names))).rstrip())
    return 0
