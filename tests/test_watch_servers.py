"""`cowmem watch` on real prefork parents: gunicorn (from PyPI) and a multiprocessing.Pool.

Each worker reports the pages of the objects it read (from their id(),
in the worker): reading writes their reference counts, so each of those
pages must be one the worker copied (or one its parent wrote since the
fork), and their count must grow as it reads more.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cowmem.watch import processes
from cowmem.watch.watcher import Watcher
from watching import by_pid, client, cowmem, records, wait_for

HERE = Path(__file__).parent
PARTS = 24
WORKERS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def gunicorn(tmp_path):
    started = []

    def start(*options: str, env=None):
        pytest.importorskip("gunicorn")
        port = free_port()
        log = (tmp_path / "gunicorn.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--preload", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
             "--chdir", str(HERE), *options, "watch_app:app"],
            stdout=log, stderr=log, start_new_session=True, env={**os.environ, **(env or {})})
        started.append(server)
        wait_for(lambda: len(processes.tree(server.pid)) == 1 + WORKERS and accepts(port), what="gunicorn")
        return server.pid, port

    yield start
    for server in started:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        for index in Path("/tmp").glob(f"cowmem-watch-{server.pid}-*.npz"):
            index.unlink()  # attach() removes it at a normal exit only


def unshared(watcher: Watcher):
    """Each child's pages that are no longer the parent's: copied, or
    parent-written (the parent wrote them since the fork, so that the
    child's copy is not the child's doing: the Pool's parent allocates
    results into holes of the data's pages)."""
    out = {}
    for row in watcher.sample().children():
        f = row.figures
        out[row.pid] = set(f.copied_pages.tolist()) | set(f.parent_written_pages.tolist())
    return out


def check_rounds(watcher: Watcher, workers, run_round) -> None:
    """Two rounds of reading; after each, every worker's own pages hold
    every page it read, and the second round's new pages add to them."""
    assert set(unshared(watcher)) == set(workers)
    first = run_round(0)
    after_first = unshared(watcher)
    second = run_round(1)
    after_second = unshared(watcher)
    for pid in workers:
        assert first.get(pid) and second.get(pid), f"worker {pid} served no request in a round"
        assert first[pid] <= after_first[pid]
        assert first[pid] | second[pid] <= after_second[pid]
        new = second[pid] - after_first[pid]
        assert new and len(after_second[pid]) >= len(after_first[pid]) + len(new)


@pytest.mark.parametrize("variant", ["plain", "freeze"])
def test_gunicorn_workers_copy_what_they_read(gunicorn, variant):
    """A real gunicorn, --preload, 3 workers on 127.0.0.1; "freeze" adds
    gc.freeze() in its pre_fork hook and a gc.collect() per request."""
    if variant == "freeze":
        master, port = gunicorn("-c", str(HERE / "watch_gunicorn_freeze.py"), env={"WATCH_APP_GC_COLLECT": "1"})
    else:
        master, port = gunicorn()
    workers = [m.info.pid for m in processes.tree(master)[1:]]
    watcher = Watcher(master)
    check_rounds(watcher, workers, lambda r: {pid: read.pages for pid, read in client(port, PARTS, r * 9, 9).items()})
    result = cowmem("watch", "--parent", str(master), "--once", "--json")
    assert result.returncode == 0, result.stderr
    objects = by_pid(records(result.stdout))
    assert objects[master]["role"] == "parent"
    for pid in workers:
        assert objects[pid]["parent"] == master
        assert objects[pid]["copied_bytes"] >= objects[pid]["unsure_bytes"] >= 0


@pytest.fixture
def pool():
    proc = subprocess.Popen([sys.executable, str(HERE / "watch_pool.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=HERE)
    yield proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


def test_pool_workers_copy_what_they_read(pool):
    started = json.loads(pool.stdout.readline())
    parent, workers = started["parent"], started["workers"]
    assert len(workers) == WORKERS

    def run_round(r: int):
        pool.stdin.write(f"round {r * 9} 9\n")
        pool.stdin.flush()
        return {int(pid): set(pages) for pid, pages in json.loads(pool.stdout.readline()).items()}

    check_rounds(Watcher(parent), workers, run_round)
    objects = by_pid(records(cowmem("watch", "--parent", str(parent), "--once", "--json").stdout))
    assert {pid for pid, o in objects.items() if o["role"] == "child"} == set(workers)


def test_attach_names_the_types_the_copied_pages_hold(gunicorn):
    """With cowmem.watch.attach() in gunicorn's when_ready hook, watch says
    what each worker's copied pages hold: at least the bytes of the strs and
    ints it read that lie on their first page (which reading copied)."""
    master, port = gunicorn("-c", str(HERE / "watch_gunicorn_attach.py"))
    read = client(port, PARTS, 0, 9)
    result = cowmem("watch", "--parent", str(master), "--once", "--json")
    assert result.returncode == 0, result.stderr
    objects = by_pid(records(result.stdout))
    assert "types" not in objects[master]
    for pid, what in read.items():
        types = objects[pid]["types"]
        assert sum(types.values()) <= objects[pid]["copied_bytes"]
        for name, held in what.heads.items():
            assert types[name] >= held, (pid, name)
    table = cowmem("watch", "--parent", str(master), "--once").stdout
    assert "COPIED PAGES HOLD" in table and "% str" in table
