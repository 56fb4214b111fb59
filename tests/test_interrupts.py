"""Ctrl-C at any moment leaves nothing behind, and surfaces as KeyboardInterrupt only.

The storm itself runs in a process of its own (tests/storm.py): it makes
itself a child subreaper and owns the SIGINT handling, neither of which
should leak into the rest of the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capabilities import needs

STORM = Path(__file__).with_name("storm.py")
# Signals per mode: COWMEM_STORM_ROUNDS multiplies them (the CI run uses 1).
ROUNDS = {"plain": 300, "explain": 150, "workers": 150, "locate": 150}
SCALE = float(os.environ.get("COWMEM_STORM_ROUNDS", "1"))


@pytest.mark.parametrize("mode", [
    "plain",
    pytest.param("explain", marks=needs("userfaultfd")),
    "workers",
    "locate",
])
def test_a_storm_of_sigints_leaves_no_process_and_raises_only_keyboardinterrupt(mode):
    rounds = max(1, round(ROUNDS[mode] * SCALE))
    done = subprocess.run([sys.executable, str(STORM), mode, str(rounds), "2024"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    print(summary)  # the figures, with -s
    assert summary["sent"] == rounds
    # Every signal surfaced exactly once, as a KeyboardInterrupt: inside the
    # call, or after it when the call had finished first (or before it began).
    assert summary["before"] + summary["inside"] + summary["after"] == rounds
    assert summary["twice"] == 0
    assert summary["other"] == []
    assert summary["leftovers"] == []
    assert summary["fds_leaked"] == 0
