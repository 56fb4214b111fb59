"""`cowmem watch` against processes whose copies are known by construction.

Each target (tests/watch_targets.py) is a plain forking parent whose
children write exactly K known pages of a parent buffer: the page numbers
come from the buffer's address, not from cowmem.  Inside the buffer the
copied pages must be exactly those; in the whole child, K plus the
child's own interpreter noise.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cowmem import PAGE_SIZE
from cowmem.watch import json_lines, processes
from cowmem.watch.watcher import Watcher
from watching import Target, by_pid, cowmem, records, wait_for

PAGES = 30_000                # the targets' buffer
FIRST = 1_000                 # where the children's writes begin in it
# The child's own interpreter noise: the pages a child copies outside the
# buffer between its fork and its sleep (after-fork handlers, reading the
# pipe, the loop).  Measured with this file's targets on CPython 3.11.7:
# 61 to 76 pages over 144 children (k = 0, 1,000 and 20,000, each watched
# after and from before the writes, 24 children each; 71-76 watched after,
# 61-69 from before).  The bound leaves room for a busier interpreter.
NOISE_PAGES = 96


@pytest.fixture
def target():
    started = []

    def start(*args: str, **options) -> Target:
        started.append(Target(*map(str, args), **options))
        return started[-1]

    yield start
    for t in started:
        t.stop()


def in_buffer(t: Target, pages) -> set:
    return {p for p in pages if t.buffer_page <= p < t.buffer_page + PAGES}


def minor_faults(pid: int) -> int:
    """The child's minor faults since its fork (proc(5) field 10): each copy is one."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


# --- ground truth ---------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1000, 20_000])
def test_ground_truth_watched_after_the_writes(target, k):
    """Watched only once the children have written: through the command
    line (totals) and the library (the very pages)."""
    t = target("--k", k, "--pages", PAGES)
    result = cowmem("watch", "--parent", str(t.parent), "--once", "--json")
    assert result.returncode == 0, result.stderr
    objects = by_pid(records(result.stdout))
    assert set(objects) == {t.parent, *t.children}
    for pid in t.children:
        copied = objects[pid]["copied_bytes"]
        assert k * PAGE_SIZE <= copied <= (k + NOISE_PAGES) * PAGE_SIZE, (pid, copied // PAGE_SIZE)
        assert copied // PAGE_SIZE <= minor_faults(pid)
    sample = Watcher(t.parent).sample()
    for row in sample.children():
        assert in_buffer(t, row.figures.copied_pages.tolist()) == t.pages(FIRST, k)


@pytest.mark.parametrize("k", [0, 1000, 20_000])
def test_ground_truth_watched_from_before_the_writes(target, k):
    """Watched before the children write: the same pages, and none of the
    buffer's unsure (each was seen shared before it was copied)."""
    t = target("--k", k, "--pages", PAGES, "--wait")
    watcher = Watcher(t.parent)
    watcher.sample()
    t.go()
    rows = watcher.sample().children()
    assert {row.pid for row in rows} == set(t.children)
    for row in rows:
        f = row.figures
        assert in_buffer(t, f.copied_pages.tolist()) == t.pages(FIRST, k)
        assert not in_buffer(t, f.unsure_pages.tolist())
        assert k <= f.copied_bytes // PAGE_SIZE <= k + NOISE_PAGES
        assert f.resident_bytes == f.copied_bytes + f.shared_bytes + f.fresh_bytes + f.parent_written_bytes


def test_distinct_pages_older_siblings_make_them_sure(target):
    """Each child writes its own 1,000 pages; watched late.  The parent's
    frame there is still an older sibling's (which did not write it), which
    proves the parent kept it: sure.  The oldest child has no older sibling."""
    k = 1000
    t = target("--k", k, "--pages", PAGES, "--distinct")
    rows = {row.pid: row.figures for row in Watcher(t.parent).sample().children()}
    for index, pid in enumerate(t.children):
        mine = t.pages(FIRST + index * k, k)
        assert in_buffer(t, rows[pid].copied_pages.tolist()) == mine
        unsure = in_buffer(t, rows[pid].unsure_pages.tolist())
        assert unsure == (mine if index == 0 else set())


def test_an_older_sibling_decides_for_children_forked_as_the_parent_built_its_data(target):
    """The parent makes its buffer and forks three children, each writing
    its own 1,000 pages, all between two samples, as gunicorn loads its app
    and forks its workers.  The readings around the forks cannot tell
    whether the parent had the buffer's pages at each fork; an older
    sibling still sharing the parent's page proves it did.  Only the oldest
    child's pages stay unsure."""
    k = 1000
    t = target("--k", k, "--pages", PAGES, "--distinct", "--late")
    watcher = Watcher(t.parent)
    watcher.sample()  # the parent alone, its buffer not yet made
    t.begin()
    rows = {row.pid: row.figures for row in watcher.sample().children()}
    for index, pid in enumerate(t.children):
        mine = t.pages(FIRST + index * k, k)
        assert in_buffer(t, rows[pid].copied_pages.tolist()) == mine
        assert in_buffer(t, rows[pid].unsure_pages.tolist()) == (mine if index == 0 else set())


def test_pages_the_parent_rewrote_are_not_the_childrens_copies(target):
    """Two children forked, then the parent rewrites 500 pages, then a
    third child: the first two still hold the originals (parent-written,
    not copied), the third shares the parent's new pages."""
    k, rewritten = 1000, 500
    t = target("--k", k, "--pages", PAGES, "--parent-writes", rewritten, "--stagger", 0.05)
    sample = Watcher(t.parent).sample()
    rows = {row.pid: row.figures for row in sample.rows}
    written = t.pages(0, rewritten)
    for index, pid in enumerate(t.children):
        f = rows[pid]
        assert in_buffer(t, f.copied_pages.tolist()) == t.pages(FIRST, k)
        if index < 2:
            assert f.parent_written_bytes >= rewritten * PAGE_SIZE
    assert rows[t.parent].copied_bytes >= rewritten * PAGE_SIZE  # its own copies of what it rewrote
    assert not written & in_buffer(t, rows[t.children[2]].copied_pages.tolist())


def test_children_forked_while_watching_are_exact(target, tmp_path):
    """`watch -- COMMAND`: the forks fall between samples, so each child's
    origin is known from the parent's readings around its fork."""
    k = 1000
    script = [sys.executable, os.path.join(os.path.dirname(__file__), "watch_targets.py"),
              "--k", str(k), "--pages", str(PAGES), "--stagger", "0.4", "--parent-writes", "500"]
    out = tmp_path / "out"
    with out.open("w") as stdout:  # a file: the target, which runs on, holds it open too
        watch = subprocess.run([sys.executable, "-m", "cowmem", "watch", "--interval", "0.1", "--json",
                                "--count", "40", "--", *script], stdout=stdout, timeout=120)
    lines = out.read_text().splitlines()
    event = json.loads(next(line for line in lines if '"event": "forked"' in line))
    try:
        assert watch.returncode == 0
        objects = records("\n".join(line for line in lines if '"event"' not in line))
        last = by_pid(objects)
        for pid in event["children"]:
            assert k * PAGE_SIZE <= last[pid]["copied_bytes"] <= (k + NOISE_PAGES) * PAGE_SIZE
            assert last[pid]["unsure_bytes"] <= NOISE_PAGES * PAGE_SIZE
        first_seen = {pid: min(o["sample"] for o in objects if o["pid"] == pid) for pid in event["children"]}
        assert len(set(first_seen.values())) == 3, "the children were forked at different samples"
    finally:
        os.killpg(event["parent"], signal.SIGKILL)


# --- the process tree -----------------------------------------------------

def test_tree_matches_psutil(target):
    import psutil

    t = target("--grandchild", 10, "--k", 10)
    members = processes.tree(t.parent)
    assert [m.info.pid for m in members][0] == t.parent
    expected = {p.pid for p in psutil.Process(t.parent).children(recursive=True)}
    assert {m.info.pid for m in members[1:]} == expected
    assert all(m.forked for m in members[1:])


def test_children_of_children_are_compared_with_their_own_parent(target):
    k, k2 = 1000, 700
    t = target("--k", k, "--grandchild", k2, "--pages", PAGES)
    rows = {row.pid: row for row in Watcher(t.parent).sample().rows}
    grandchild = rows[t.grandchild]
    assert grandchild.parent == t.children[0] and grandchild.depth == 2
    assert in_buffer(t, grandchild.figures.copied_pages.tolist()) == t.pages(FIRST + k, k2)
    assert in_buffer(t, rows[t.children[0]].figures.copied_pages.tolist()) == t.pages(FIRST, k)


def test_a_child_that_exits_leaves_its_last_figures(target):
    k = 1000
    t = target("--k", k, "--pages", PAGES, "--wait", "--exit-after", 0.5)
    watcher = Watcher(t.parent)
    before = {row.pid: row for row in watcher.sample().rows}
    t.go()
    written = {row.pid: row for row in watcher.sample().rows}
    last = t.children[-1]
    wait_for(lambda: processes.read_stat(last).state == "Z", what="the child's exit")
    sample = watcher.sample()
    assert last not in {row.pid for row in sample.rows}
    (gone,) = sample.left
    assert gone.pid == last and gone.state == "exited"
    assert gone.figures == written[last].figures != before[last].figures
    assert gone.figures.copied_bytes >= k * PAGE_SIZE
    assert watcher.sample().left == ()


def test_json_keeps_the_exited_childs_last_figures(target):
    t = target("--k", 1000, "--pages", PAGES, "--wait", "--exit-after", 1.0)
    watch = subprocess.Popen([sys.executable, "-m", "cowmem", "watch", "--parent", str(t.parent),
                              "--interval", "0.1", "--json"], stdout=subprocess.PIPE, text=True)
    assert watch.stdout.readline()  # the first sample is out
    t.go()
    wait_for(lambda: processes.read_stat(t.children[-1]).state == "Z", what="the child's exit")
    time.sleep(0.5)
    watch.send_signal(signal.SIGINT)
    out, _ = watch.communicate(timeout=60)
    mine = [o for o in records(out) if o["pid"] == t.children[-1]]
    states = [o["state"] for o in mine]
    assert states.count("exited") == 1 and states[-1] == "exited"
    running = [o for o in mine if o["state"] == "running"]
    keep = ("copied_bytes", "shared_bytes", "fresh_bytes", "unsure_bytes", "resident_bytes")
    assert {k: mine[-1][k] for k in keep} == {k: running[-1][k] for k in keep}
    assert mine[-1]["copied_bytes"] >= 1000 * PAGE_SIZE


def test_a_parent_that_exits_ends_the_watch(target):
    t = target("--k", 10, "--pages", PAGES, "--wait", "--parent-exits")
    watch = subprocess.Popen([sys.executable, "-m", "cowmem", "watch", "--parent", str(t.parent),
                              "--interval", "0.1", "--json"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    t.go()
    out, _ = watch.communicate(timeout=60)  # ends by itself: no --count
    assert watch.returncode == 0
    objects = records(out)
    final = {o["pid"]: o["state"] for o in objects if o["sample"] == objects[-1]["sample"]}
    assert final == {t.parent: "exited", **{pid: "orphaned" for pid in t.children}}


# --- Ctrl-C ---------------------------------------------------------------

def _untouched(pids) -> None:
    for pid in pids:
        info = processes.read_stat(pid)
        assert info is not None and info.state in "SR", (pid, info)


def test_ctrl_c_leaves_the_watched_processes_untouched(target):
    t = target("--k", 1000, "--pages", PAGES, "--wait")
    watch = subprocess.Popen([sys.executable, "-m", "cowmem", "watch", "--parent", str(t.parent),
                              "--interval", "0.05"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert watch.stdout.readline().startswith("cowmem watch: sample 1")
    time.sleep(0.3)
    os.killpg(watch.pid, signal.SIGINT)  # the terminal's Ctrl-C: watch's whole process group
    watch.communicate(timeout=30)
    assert watch.returncode == 0
    _untouched([t.parent, *t.children])
    t.go()  # they still run as before: the children write and say so


def _started_command(watch: subprocess.Popen, script: str) -> int:
    """The pid of the command watch started, found while watch still runs, so
    that the test can kill it (it leads a session of its own) whatever fails."""
    found = []

    def started() -> bool:
        found[:] = [p.pid for p in psutil.Process(watch.pid).children() if script in " ".join(p.cmdline())]
        return bool(found)

    wait_for(started, timeout=30, what=f"watch to start {script}")
    return found[0]


def test_ctrl_c_leaves_a_started_command_running():
    script = [sys.executable, os.path.join(os.path.dirname(__file__), "watch_targets.py"), "--k", "10"]
    watch = subprocess.Popen([sys.executable, "-m", "cowmem", "watch", "--interval", "0.05", "--json", "--",
                              *script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    command = _started_command(watch, "watch_targets.py")
    try:
        event = next(json.loads(line) for line in watch.stdout if '"event": "forked"' in line)
        assert event["parent"] == command
        os.killpg(watch.pid, signal.SIGINT)
        watch.wait(timeout=30)  # not communicate(): the command, running on, holds the pipes open
        assert watch.returncode == 0
        assert f"(pid {command}) still runs" in watch.stderr.readline()
        _untouched([command, *event["children"]])
    finally:
        for group in (command, watch.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        watch.wait()
        watch.stdout.close()
        watch.stderr.close()


def test_each_json_line_is_flushed_on_its_own(target):
    """A command started by ``watch --`` shares watch's stdout: each line
    must go out in a write of its own, which a pipe keeps whole (up to
    4096 bytes), so that the command's output cannot land inside it."""
    t = target("--k", 10)
    flushed = []

    class Stream(io.StringIO):
        def flush(self) -> None:
            flushed.append(self.getvalue())
            self.seek(0)
            self.truncate()

    sample = Watcher(t.parent).sample()
    json_lines.write(sample, Stream())
    assert len(flushed) == len(sample.rows) == 1 + len(t.children)
    for line in flushed:
        assert line.count("\n") == 1 and line.endswith("\n") and len(line.encode()) <= 4096
        assert json.loads(line)["pid"] in {t.parent, *t.children}


# --- without frame numbers --------------------------------------------------

def test_without_frame_numbers_it_says_what_it_cannot_tell(target):
    """Without CAP_SYS_ADMIN frame numbers read as 0: copied cannot be
    told from fresh or parent-written, and the output says so."""
    k = 1000
    t = target("--k", k, "--pages", PAGES)
    lacking = ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-m", "cowmem", "watch",
               "--parent", str(t.parent), "--once"]
    result = subprocess.run([*lacking, "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    objects = by_pid(records(result.stdout))
    for pid in t.children:
        o = objects[pid]
        assert o["frames_readable"] is False and o["copied_bytes"] is None
        assert k * PAGE_SIZE <= o["copied_at_most_bytes"] <= (k + NOISE_PAGES) * PAGE_SIZE
        assert o["shared_bytes"] >= (PAGES - k) * PAGE_SIZE
    table = subprocess.run(lacking, capture_output=True, text=True, timeout=60).stdout
    assert "frame numbers are unreadable" in table and "<= " in table


# --- the command line --------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["watch"], "give either --parent PID or -- COMMAND"),
    (["watch", "--parent", "1", "--", "true"], "give either --parent PID or -- COMMAND"),
    (["watch", "--parent", "999999999"], "no running process with pid 999999999"),
    (["watch", "--parent", "1", "--once", "--count", "2"], "--once and --count exclude each other"),
    (["watch", "--parent", "1", "--interval", "0"], "must be a positive number"),
    (["watch", "--parent", "1", "--plot", "out.txt"], "must end in .png, .svg, .pdf"),
    (["watch", "--", "/no/such/command"], "cannot start '/no/such/command'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment):
    result = cowmem(*argv)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("cowmem watch: error:") and fragment in line


def test_table_total_line_and_plot(target, tmp_path):
    t = target("--k", 1000, "--pages", PAGES)
    plot = tmp_path / "copied.png"
    result = cowmem("watch", "--parent", str(t.parent), "--count", "3", "--interval", "0.1", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    tables = result.stdout.split("\n\n")
    assert len(tables) == 3
    lines = tables[-1].splitlines()
    header, rows, total = lines[1].split(), lines[2:-1], lines[-1].split()
    copied = header.index("COPIED")
    children = [r.split() for r in rows if r.split()[1] == "child"]
    assert len(children) == 3
    # The total's columns sit one word right of the rows' (its label is two words).
    assert float(total[copied + 1].replace(",", "")) == pytest.approx(
        sum(float(r[copied].replace(",", "")) for r in children), abs=0.15)
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_child_that_execs_is_a_parent_of_its_own():
    """fork + exec (subprocess): the child shares nothing with its parent
    any more, so it is not compared with it; it heads a family of its own."""
    code = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        rows = {row.pid: row for row in Watcher(parent.pid).sample().rows}
        assert rows[child].role == "parent" and rows[child].parent is None
        assert rows[child].figures.shared_bytes == 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()


def test_on_a_terminal_the_table_redraws_in_place(target):
    import pty

    t = target("--k", 10)
    primary, secondary = pty.openpty()
    watch = subprocess.Popen([sys.executable, "-m", "cowmem", "watch", "--parent", str(t.parent), "--count", "2",
                              "--interval", "0.1"], stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    assert watch.wait(timeout=60) == 0
    first, _, second = out.decode().partition("\x1b[")
    lines = first.count("\n")
    assert second.startswith(f"{lines}F\x1b[J") and "sample 2" in second
