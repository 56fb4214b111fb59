"""Selectors and the pairing of two sides: what ``--compare FROM TO`` and the upgrade page compare.

A side is comma-separated terms, each one of:

- ``key=value`` with key ``python``, ``machine``, ``commit`` or a
  requirement or environment variable the results have (``numpy``,
  ``pandas``...).  A version matches itself and its longer releases
  (``3.12`` matches 3.12.1, not 3.120); ``commit=`` takes a hash prefix of
  at least 8 characters;
- an asv environment name, or a prefix of one (``virtualenv-py3.12``);
- a results directory (``other/results``), whose runs the side then reads.

A side without ``commit=`` is taken at the default commit: ``--commit``, else
the newest commit of its results directory.

Pairing: a dimension (machine, python, each requirement and variable, the
commit) on which no value of one side is compatible with any of the other's
is what changed; the runs of the two sides are paired on every other
dimension.  So ``python=3.12`` -> ``python=3.13`` compares them for each
numpy version present on both sides, on each machine, and two results
directories of one environment compare run with run.  Two values are
compatible when equal or when one is a version prefix of the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import UnknownNameError
from .results import Results, Run, load_results
from .versions import exact_python

MIN_COMMIT_PREFIX = 8


def fields(results: Results, run: Run) -> Dict[str, str]:
    """The run's dimensions: what ``key=value`` terms match and pairing compares."""
    env = run.environment
    found = {"machine": env.machine, "python": exact_python(results, run)}
    found.update(env.requirements)
    found.update(env.env_vars)
    found["commit"] = run.commit
    return found


def version_matches(actual: Optional[str], wanted: str) -> bool:
    """``wanted`` is ``actual`` or a prefix of it by whole components."""
    return actual is not None and (actual == wanted or actual.startswith(wanted + "."))


def compatible(one: str, other: str) -> bool:
    return version_matches(one, other) or version_matches(other, one)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its selector and the runs it selected."""

    selector: str
    results: Results
    runs: Tuple[Run, ...]
    commit: str            # the side's commit, or "" when ``commit=`` named several

    def fields(self, run: Run) -> Dict[str, str]:
        return fields(self.results, run)


@dataclass(frozen=True)
class Pairing:
    """Which runs of the two sides are compared with which."""

    changed: Tuple[str, ...]        # the dimensions the sides differ in
    paired_on: Tuple[str, ...]
    pairs: Tuple[Tuple[Run, Run], ...]
    unpaired: Tuple[Run, ...]       # runs of either side with no counterpart


def select(selector: str, default: Callable[[], Results], commit: Optional[str]) -> Side:
    """The runs ``selector`` names; ``default()`` gives the results when it names no directory.

    Raises UnknownNameError, with what exists, when nothing matches.
    """
    terms = [term.strip() for term in selector.split(",") if term.strip()]
    if not terms:
        raise UnknownNameError(f"empty selector {selector!r}")
    directories = [term for term in terms if Path(term).is_dir()]
    if len(directories) > 1:
        raise UnknownNameError(f"{selector!r} names several results directories")
    if directories:
        results = load_results(directories[0])
        terms.remove(directories[0])
    else:
        results = default()
    runs = list(results.runs)
    dimensions = sorted({key for run in runs for key in fields(results, run)})
    named_commit = False
    for term in terms:
        key, sep, value = (part.strip() for part in term.partition("="))
        if not sep:
            runs = [run for run in runs if run.environment.name == term] or \
                [run for run in runs if run.environment.name.startswith(term)]
            continue
        if key not in dimensions:
            raise UnknownNameError(f"bad selector term {term!r} in {selector!r}: use key=value "
                                   f"with key one of {', '.join(dimensions)}, an environment "
                                   "name or prefix, or a results directory")
        if key == "commit":
            named_commit = True
            if len(value) < MIN_COMMIT_PREFIX:
                raise UnknownNameError(f"commit={value} in {selector!r}: give at least "
                                       f"{MIN_COMMIT_PREFIX} characters of the hash")
            runs = [run for run in runs if run.commit.startswith(value.lower())]
        else:
            runs = [run for run in runs if version_matches(fields(results, run).get(key), value)]
    if not named_commit:
        at = results.resolve_commit(commit)
        runs = [run for run in runs if run.commit == at]
    if not runs:
        where = "" if named_commit else f" at commit {results.resolve_commit(commit)[:8]}"
        raise UnknownNameError(f"no environment matches {selector!r}{where} in {results.path}; "
                               "environments: " + ", ".join(str(e) for e in results.environments()))
    commits = {run.commit for run in runs}
    return Side(selector, results, tuple(sorted(runs, key=Run.sort_key)),
                commits.pop() if len(commits) == 1 else "")


def pair(old: Side, new: Side) -> Pairing:
    """Pair the runs of ``old`` with those of ``new`` on the dimensions they share.

    Raises UnknownNameError when the sides select the same runs, or no run of
    one has a counterpart in the other.
    """
    old_fields = {id(run): old.fields(run) for run in old.runs}
    new_fields = {id(run): new.fields(run) for run in new.runs}
    dimensions = sorted({key for f in (*old_fields.values(), *new_fields.values()) for key in f})

    def values(side_fields: Dict[int, Dict[str, str]], key: str) -> List[str]:
        return [f.get(key, "") for f in side_fields.values()]

    changed = tuple(key for key in dimensions
                    if not any(compatible(a, b) for a in values(old_fields, key)
                               for b in values(new_fields, key)))
    paired_on = tuple(key for key in dimensions if key not in changed)
    pairs = tuple((a, b) for a in old.runs for b in new.runs if a is not b and all(
        compatible(old_fields[id(a)].get(key, ""), new_fields[id(b)].get(key, ""))
        for key in paired_on))
    if not pairs:
        if {run.path for run in old.runs} == {run.path for run in new.runs}:
            raise UnknownNameError(f"{old.selector!r} and {new.selector!r} select the same "
                                   "environments: nothing to compare")
        raise UnknownNameError(f"no environment of {old.selector!r} has a counterpart in "
                               f"{new.selector!r} (paired on {', '.join(paired_on) or 'nothing'})")
    in_pairs = {id(run) for pair_ in pairs for run in pair_}
    unpaired = tuple(run for run in (*old.runs, *new.runs) if id(run) not in in_pairs)
    return Pairing(changed, paired_on, pairs, unpaired)
