"""The command line: every subcommand, every kind of bad input, exit statuses."""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import re
import subprocess
import sys
import types

import pytest

from cowmem import PAGE_SIZE, ForkReport, InsufficientMemoryError, cli, experiment, workloads
from cowmem.commands import arguments

from capabilities import needs

MIB = 1 << 20


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m cowmem ARGS`` in a new interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cowmem", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_bad_input(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, nothing on stdout, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- help and usage -----------------------------------------------------

@pytest.mark.parametrize("command", [[], ["list"], ["measure"], ["workers"]])
def test_help_exits_0_and_describes_the_command(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: cowmem {' '.join(command)}".rstrip())


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("list", "measure", "workers", "report", "publish"):
        assert f"\n    {name} " in out


@pytest.mark.parametrize("argv, fragments", [
    ([], ["cowmem: error:", "required: COMMAND"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
    (["measure"], ["cowmem measure: error:", "DATA, ACCESS"]),
    (["measure", "list_int"], ["ACCESS"]),
    (["measure", "list_int", "sum", "--size", "-5"], ["--size", "at least 1, not -5"]),
    (["measure", "list_int", "sum", "--size", "0"], ["--size", "at least 1, not 0"]),
    (["measure", "list_int", "sum", "--size", "abc"], ["--size", "not a whole number: 'abc'"]),
    (["measure", "list_int", "sum", "--size", "1.5"], ["--size", "not a whole number: '1.5'"]),
    (["measure", "list_int", "sum", "--size", "inf"], ["--size", "not a whole number"]),
    (["workers", "--scale", "0"], ["--scale", "positive number, not 0"]),
    (["workers", "--scale", "-1"], ["--scale", "positive"]),
    (["workers", "--scale", "nan"], ["--scale", "positive"]),
    (["workers", "--scale", "x"], ["--scale", "not a number: 'x'"]),
    (["workers", "--workers", "0"], ["--workers", "between 1 and 64, not 0"]),
    (["workers", "--workers", "1000"], ["--workers", "between 1 and 64"]),
    (["workers", "--workers", "two"], ["--workers", "not a whole number"]),
    (["list", "extra"], ["unrecognized arguments: extra"]),
])
def test_bad_usage_exits_2_with_one_line(argv, fragments, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert all(f in captured.err for f in fragments), captured.err


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1_000_000", 10**6), ("1e6", 10**6),
                                         ("1e40", 10**40), ("2.5e3", 2500)])
def test_sizes_are_read_exactly(text, value):
    assert arguments.size(text) == value


# --- bad input in a real process: one line, exit 2, never a traceback ---

@pytest.mark.parametrize("args, fragments", [
    (["measure", "list_intx", "sum"], ["unknown data kind 'list_intx'", "did you mean 'list_int'"]),
    (["measure", "list_int", "summ"], ["unknown access 'summ'", "valid names:"]),
    (["measure", "list_str", "sum"], ["does not apply to data kind 'list_str'"]),
    (["measure", "list_int", "sum", "--size", "-5"], ["at least 1"]),
    (["measure", "list_int", "sum", "--size", "1e40"], ["refusing to build 'list_int'", "available"]),
    (["workers", "--scale", "1000"], ["--scale 1000", "is available", "fits"]),
    (["workers", "--start-method", "bogus"], ["start method 'bogus' is unknown", "choose from"]),
    (["measure"], ["required"]),
    (["nonsense"], ["invalid choice"]),
])
def test_bad_input_in_a_real_process(args, fragments):
    assert_bad_input(run(*args), *fragments)


def test_an_unavailable_start_method_exits_2(monkeypatch, capsys):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    assert cli.main(["workers", "--start-method", "forkserver", "--scale", "0.001"]) == 2
    err = capsys.readouterr().err
    assert err == ("cowmem workers: error: start method 'forkserver' is not available on this platform; "
                   "choose from: fork, spawn, default\n")


# --- list -----------------------------------------------------------------

def test_list_shows_every_kind_access_and_which_pairs_apply(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, kind in workloads.DATA_KINDS.items():
        assert f"  {name}" in out and kind.description in out
    for name, access in workloads.ACCESSES.items():
        assert access.description in out
    matrix = out.split("Pairs that apply")[1].splitlines()[1:]
    header = matrix[0].split()
    assert header == list(workloads.ACCESSES)
    rows = {line.split()[0]: line.split()[1:] for line in matrix[1:] if line.strip()}
    assert list(rows) == list(workloads.DATA_KINDS)
    for data, marks in rows.items():
        assert marks == ["x" if workloads.applies(data, a) else "-" for a in header]


def test_list_says_which_kinds_lack_their_library_here(capsys, monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "1.26.4" if name == "numpy" else real(name))
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.split("Accesses")[0].splitlines()
    [line] = [line for line in lines if line.startswith("  ndarray_stringdtype ")]
    assert line.endswith("(n/a here: data kind 'ndarray_stringdtype' needs numpy >= 2.0, "
                         "and numpy 1.26.4 is installed here)")
    assert not any("n/a here" in line for line in lines if line.startswith("  list_int "))


def test_list_in_a_real_process():
    result = run("list")
    assert result.returncode == 0 and result.stderr == ""
    assert "list_int" in result.stdout


# --- measure --------------------------------------------------------------

def fake_report(**changes) -> ForkReport:
    fields = dict(copied_bytes=7861 * PAGE_SIZE, fresh_bytes=0, regions={"data": 7839 * PAGE_SIZE},
                  mappings={"[heap]": 7861 * PAGE_SIZE}, copied_ranges=(), unobserved={"data": 0},
                  minor_faults=8086, uss_delta_bytes=32_309_248, private_dirty_delta_bytes=32_309_248,
                  access_seconds=0.0306, pfn_guard=True)
    fields.update(changes)
    return ForkReport(**fields)


@pytest.fixture
def measured(monkeypatch):
    """workloads.measure replaced by a recorder returning fake_report()."""
    calls = []

    def measure(data, access, n, *, gc_freeze=False, timeout=600.0, prebuilt=None, explain=False):
        calls.append(dict(data=data, access=access, n=n, gc_freeze=gc_freeze, explain=explain))
        return fake_report()
    monkeypatch.setattr(workloads, "measure", measure)
    return calls


def test_measure_prints_the_short_table(measured, capsys):
    assert cli.main(["measure", "list_int", "iterate", "--size", "1e6"]) == 0
    assert measured == [dict(data="list_int", access="iterate", n=10**6, gc_freeze=False, explain=False)]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("list_int x iterate, N = 1,000,000; CPython ")
    table = {line.split("  ")[1].strip(): line for line in out[1:]}
    assert "30.7 MiB (7,861 pages)" in table["copied"]
    assert "0 B (0 pages)" in table["fresh"]
    assert "30.6 MiB (7,839 pages)" in table["in data"]
    assert "30.8 MiB" in table["USS delta"]
    assert "8,086" in table["minor faults"]
    assert "30.6 ms" in table["access time"]
    assert "none" in table["unlocated"]


def test_measure_says_when_frames_were_unreadable(monkeypatch, capsys):
    monkeypatch.setattr(workloads, "measure", lambda *a, **k: fake_report(pfn_guard=False))
    assert cli.main(["measure", "list_int", "iterate"]) == 0
    assert "page frame numbers unreadable" in capsys.readouterr().out


def test_measure_passes_gc_freeze_and_explain(measured):
    assert cli.main(["measure", "list_of_lists", "gc_collect", "--gc-freeze", "--explain", "--size", "10"]) == 0
    assert measured[-1] == dict(data="list_of_lists", access="gc_collect", n=10, gc_freeze=True, explain=True)


@needs("userfaultfd")
def test_measure_explain_for_real():
    result = run("measure", "list_int", "iterate", "--size", "20000", "--explain")
    assert result.returncode == 0, result.stderr
    whole, _, in_data = result.stdout.partition("first written inside the data:")
    assert "by reference-count writes to int" in in_data
    assert "refcount" in whole and "gc_header" in whole


def test_explain_unavailable_is_one_clear_line(monkeypatch, capsys):
    from cowmem import uffd
    from cowmem.errors import ExplainUnavailableError

    def refuse():
        raise ExplainUnavailableError("userfaultfd refused (simulated)")

    monkeypatch.setattr(uffd, "open_write_protect_fd", refuse)
    assert cli.main(["measure", "list_int", "iterate", "--size", "1000", "--explain"]) == 1
    assert capsys.readouterr().err == "cowmem measure: error: explain mode is unavailable: userfaultfd refused (simulated)\n"


def test_measure_json_for_real():
    result = run("measure", "list_int", "iterate", "--size", "20000", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(fake_report().to_dict()) <= set(report)
    assert report["copied_bytes"] == report["copied_pages"] * report["page_size"]
    # Iterating writes the refcount of every int: the data's pages are copied.
    assert 0 < report["regions"]["data"] <= report["copied_bytes"]


def test_measure_table_for_real():
    result = run("measure", "ndarray", "sum", "--size", "100000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ndarray x sum, N = 100,000")
    def pages(label):
        line = next(line for line in lines if line.strip().startswith(label))
        return int(re.search(r"\((\d+) pages?\)", line).group(1))

    # The reduction only reads the 800,000-byte buffer (196 pages). Besides
    # it, the data is two small blocks: the array object, whose refcount the
    # access takes, and its shape and strides (malloc'd). Their pages are
    # copied, or, when a neighbour on them was written before the baseline,
    # unobserved; the array object's page is written.
    assert 1 <= pages("in data") + pages("unobserved") <= 2


# --- workers --------------------------------------------------------------

def test_workers_experiment_sizes_follow_the_scale():
    at_one = {(case.data, case.access): n for case, n in experiment.sizes(1.0)}
    assert at_one == {("ndarray", "sum"): 15000 * 15000, ("list_int", "sum"): 10**8,
                      ("list_int", "iterate"): 10**8, ("list_same_int", "iterate"): 10**8}
    at_tenth = {(case.data, case.access): n for case, n in experiment.sizes(0.1)}
    assert at_tenth[("ndarray", "sum")] == 4743 ** 2  # round(15000 * sqrt(0.1)) squared: still square
    assert at_tenth[("list_int", "sum")] == 10**7


def test_workers_experiment_refuses_what_does_not_fit_and_names_a_scale_that_does():
    need, case, n = experiment.needed_bytes(1.0, 4)
    assert (case.data, n) == ("list_int", 10**8)
    assert need == workloads.estimate_bytes("list_int", 10**8) * 5
    available = need // 3
    with pytest.raises(InsufficientMemoryError) as error:
        experiment.check_memory(1.0, 4, available=available)
    message = str(error.value)
    fit = float(message.rsplit("--scale ", 1)[1].split()[0])
    assert f"{available / 2**30:.1f} GiB is available" in message
    assert 0.3 <= fit < 1 / 3
    experiment.check_memory(fit, 4, available=available)  # the suggestion fits
    experiment.check_memory(1.0, 4, available=need)


@pytest.mark.parametrize("value, down", [(0.5873, 0.58), (0.58, 0.58), (0.0123, 0.012), (3.3, 3.3), (12.7, 12)])
def test_round_down_keeps_two_significant_digits(value, down):
    assert experiment._round_down(value) == down


def test_workers_experiment_shows_lists_copied_and_arrays_shared():
    rows = experiment.run(scale=0.01, workers=2)
    by_case = {(row.case.data, row.case.access): row for row in rows}
    assert list(by_case) == [("ndarray", "sum"), ("list_int", "sum"), ("list_int", "iterate"),
                             ("list_same_int", "iterate")]
    for row in rows:
        assert row.report.ok and len(row.report.workers) == 2
    # Each int is a 32-byte block (28 bytes rounded up by pymalloc); pool headers
    # and the worker's own interpreter pages add a little.
    ints = [w.cost_bytes / row.n for key in [("list_int", "sum"), ("list_int", "iterate")]
            for row in [by_case[key]] for w in row.report.workers]
    assert all(32 <= per_int < 33 for per_int in ints), ints
    for key in [("ndarray", "sum"), ("list_same_int", "iterate")]:
        for w in by_case[key].report.workers:
            assert w.cost_bytes < experiment.INTERPRETER_ALLOWANCE  # the data itself stays shared
    text = experiment.format_rows(rows, 0.01)
    lines = text.splitlines()
    assert "2 workers, start method fork, scale 0.01" in lines[0]
    assert lines[3].startswith("case ")
    cases = [line.split("  ")[0] for line in lines[4:]]
    assert cases == ["np.ones((1500, 1500)), data.sum()", "list(range(10**6)), sum(data)",
                        "list(range(10**6)), for x in data: pass", "[1] * 10**6, for x in data: pass"]
    assert [(" shared " in line, " copied " in line) for line in lines[4:]] == \
        [(True, False), (False, True), (False, True), (True, False)]


def test_workers_experiment_command_in_a_real_process_with_progress():
    result = run("workers", "--scale", "0.005", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4 + 4  # two lines of heading, a blank, column names
    progress = result.stderr.splitlines()
    assert progress[0].startswith("cowmem workers [") and "building np.ones((1061, 1061))" in progress[0]
    assert sum("building" in line for line in progress) == 3  # the two list(range) cases share one build
    assert sum("2 workers (fork) run" in line for line in progress) == 4


def test_workers_experiment_with_spawn_survives_the_main_module_being_imported_again():
    # spawn imports the parent's __main__ (cowmem/__main__.py) in every worker.
    result = run("workers", "--scale", "0.001", "--workers", "1", "--start-method", "spawn")
    assert result.returncode == 0, result.stderr
    assert "start method spawn" in result.stdout and "duplicated per worker" in result.stdout
    assert "pickled to each worker" in result.stdout


# --- report and publish: wired lazily ---------------------------------------

def install_fake(monkeypatch, name: str) -> list:
    calls = []
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--flag", action="store_true")

    def run_(args: argparse.Namespace) -> int:
        calls.append(args.flag)
        return 0
    module.add_arguments, module.run = add_arguments, run_
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_external_subcommands_are_loaded_only_when_used(monkeypatch):
    calls = install_fake(monkeypatch, "fake_report_module")
    monkeypatch.setitem(cli.COMMANDS, "report", ("fake_report_module", "the report"))
    assert cli.main(["report", "--flag"]) == 0
    assert calls == [True]


def test_a_missing_external_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "publish", ("cowmem_no_such_module", "publish"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["publish"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("cowmem publish: error: not available in this installation "
                                       "(cowmem_no_such_module is missing)\n")


def test_other_commands_do_not_import_the_external_modules(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "report", ("cowmem_no_such_module", "the report"))
    assert cli.main(["list"]) == 0
