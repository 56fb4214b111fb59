"""``cowmem publish``: the site renders with no network, in Chromium, on real results.

Two sites: the committed ``results/`` (11 real environments of cowmem's
suite, written before samples and platform facts were recorded), and the
tiny suite's real asv results on two machines (asv_project.py) with derived
environments that record exact versions.  Each is served on 127.0.0.1 and
loaded in headless Chromium that cannot resolve any other host.
Screenshots of each page go to ``$COWMEM_SCREENSHOT_DIR``, else
``<pytest's basetemp>/screenshots``.  The npm tarballs are kept in cowmem's
cache between runs (each checked against its pinned digest).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import asv
import pytest

from asv_project import (ACCESS, DATA, DATA_BENCH, GC, Project, add_environment,
                         assert_one_line_error, build_project, data_mib, run_cowmem, snapshot)
from browser import Browser, StaticServer
from capabilities import require
from cowmem import workloads
from cowmem.publish import PublishError, asvsite, vendor
from cowmem.report import gate, selectors
from cowmem.report.metrics import COPY_METRICS, is_copy_metric
from cowmem.report.results import UnknownNameError, load_results
from cowmem.reporters import text

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results"
INTERNED = "list_interned_str"
LIST_INT = "bench_numbers.ListInt"           # a kind measured in every environment
# The commit the committed results were measured at.
COMMIT = load_results(COMMITTED).commits()[0]


@pytest.fixture(scope="module")
def npm_cache() -> Path:
    require("registry")
    return vendor.default_vendor_cache()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Real results on two machines, plus environments with exact versions on both."""
    real = build_project(tmp_path_factory.getbasetemp())
    project = real.copy(tmp_path_factory.mktemp("site") / "project")
    for machine in ("alpha", "beta"):
        source = project.results_file(machine, project.commits[1])
        add_environment(source, "3.12.1", "2.2.6",
                        {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
        add_environment(source, "3.13.0", "2.2.6")
    add_environment(project.results_file("alpha", project.commits[1]), "3.11.7", "2.2.6")
    return project


def publish_site(cwd: Path, html: Path, npm_cache: Path, *args: str) -> Path:
    done = run_cowmem("publish", "--html-dir", str(html), "--vendor-cache", str(npm_cache),
                      "--no-pull", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return html


@pytest.fixture(scope="module")
def site(project: Project, npm_cache: Path) -> Path:
    before = snapshot(project.results)
    html = publish_site(project.root, project.root / "html", npm_cache)
    assert snapshot(project.results) == before
    return html


@pytest.fixture(scope="module")
def committed_site(tmp_path_factory: pytest.TempPathFactory, npm_cache: Path) -> Path:
    """``cowmem publish --results results``: the committed results, as they are."""
    before = snapshot(COMMITTED)
    html = publish_site(REPO, tmp_path_factory.mktemp("committed") / "html", npm_cache,
                        "--results", str(COMMITTED))
    assert snapshot(COMMITTED) == before
    return html


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("COWMEM_SCREENSHOT_DIR")
    path = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require("chromium")
    with Browser() as chromium:
        yield chromium


def project_python(project: Project) -> str:
    """The interpreter asv recorded for the real runs (``-E existing:same``)."""
    return json.loads(project.results_file("alpha", project.commits[1]).read_text())["python"]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height > 600, (width, height)


# --- the published files ------------------------------------------------------------

def test_site_references_only_local_files(site: Path) -> None:
    page = (site / asvsite.ASV_PAGE).read_text(encoding="utf-8")
    # asv's template, tag for tag, with each CDN file replaced by its local copy, and
    # cowmem's script for the graphs
    template = Path(asv.__file__).parent / "www" / "index.html"
    original = vendor.resource_references(template.read_text(encoding="utf-8"))
    local = vendor.resource_references(page)
    expected = [f"vendor/{vendor.LOCAL_COPIES[url].package.name}/"
                f"{vendor.LOCAL_COPIES[url].path}" if url in vendor.LOCAL_COPIES else url
                for url in original]
    expected.insert(expected.index("asv.css"), asvsite.SCRIPT)
    assert local == expected
    for url in local:
        assert (site / url).is_file(), url
    sources = json.loads((site / "vendor" / "SOURCES.json").read_text())
    assert set(sources["packages"]) == {c.package.spec for c in vendor.LOCAL_COPIES.values()}
    assert {f["replaces"] for f in sources["files"]} - {None} == set(vendor.LOCAL_COPIES)
    for entry in sources["files"]:
        assert (site / entry["file"]).is_file()
    for name in ("index.html", "upgrade.html", "cowmem-report.html", asvsite.ASV_PAGE):
        text = (site / name).read_text(encoding="utf-8")
        assert vendor.external_references(text) == [], name
        for url in vendor.resource_references(text):
            assert url.startswith("data:") or (site / url).is_file(), (name, url)


def test_integrity_kept_where_the_registry_file_is_the_cdn_file(site: Path) -> None:
    page = (site / asvsite.ASV_PAGE).read_text(encoding="utf-8")
    # jquery's CDN and jsdelivr serve the npm files byte for byte: the page still
    # checks them; cdnjs minified flot itself, so those tags lose the attribute.
    assert 'src="vendor/jquery/dist/jquery.min.js" integrity="sha256-' in page
    assert 'href="vendor/bootstrap/dist/css/bootstrap.min.css" integrity="sha256-' in page
    assert 'src="vendor/flot/jquery.flot.js" onerror=' in page
    assert "crossorigin" not in page


def test_an_unknown_asv_graph_page_is_refused(tmp_path: Path) -> None:
    www = Path(asv.__file__).parent / "www"
    for name in ("index.html", "graphdisplay.js"):
        shutil.copyfile(www / name, tmp_path / name)
    (tmp_path / "graphdisplay.js").write_text(
        (www / "graphdisplay.js").read_text().replace('position: "nw"', 'position: "ne"')
        .replace("            legend: {\n", "            legend: { // moved\n"))
    with pytest.raises(PublishError, match="asv's graphdisplay.js is not the one cowmem knows"):
        asvsite.fit_asv_pages(tmp_path, "report.html", 1)


# --- in the browser, offline ----------------------------------------------------------

@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[StaticServer]:
    with StaticServer(site) as served:
        yield served


@pytest.fixture(scope="module")
def committed_server(committed_site: Path) -> Iterator[StaticServer]:
    with StaticServer(committed_site) as served:
        yield served


def assert_offline(browser: Browser, server: StaticServer, first: int) -> None:
    """Nothing the page asked for failed or came from another host."""
    outside = browser.execute("return performance.getEntriesByType('resource')"
                              ".map(e => e.name).filter(n => !n.startsWith(location.origin))")
    assert outside == []
    failed = {path for path, status in server.requests[first:] if status >= 400}
    assert failed <= {"/favicon.ico"}, failed   # the self-contained report has no icon


@pytest.fixture
def page(server: StaticServer, browser: Browser) -> Iterator[Browser]:
    first = len(server.requests)
    yield browser
    assert_offline(browser, server, first)


@pytest.fixture
def committed_page(committed_server: StaticServer, browser: Browser) -> Iterator[Browser]:
    first = len(committed_server.requests)
    yield browser
    assert_offline(browser, committed_server, first)


def test_asv_scripts_load_offline(site: Path, server: StaticServer, page: Browser) -> None:
    first = len(server.requests)
    page.get(server.url + asvsite.ASV_PAGE)
    page.wait_for("$.asv.main_json.benchmarks && $('.benchmark-container').length",
                  "asv's benchmark grid")
    assert page.execute("return location.pathname") == "/" + asvsite.ASV_PAGE  # not error.html
    loaded = page.execute(
        "return {plot: typeof $.plot, stupidtable: typeof $.fn.stupidtable,"
        " md5: typeof md5, bootstrap: typeof $.fn.modal,"
        " plugins: $.plot.plugins.map(p => p.name),"
        " navbar_height: getComputedStyle(document.querySelector('.navbar')).minHeight}")
    assert loaded["plot"] == loaded["stupidtable"] == loaded["md5"] == "function"
    assert loaded["bootstrap"] == "function"
    assert {"time", "selection", "categories", "orderBars"} <= set(loaded["plugins"])
    assert loaded["navbar_height"] == "50px"        # bootstrap.min.css styles the navbar
    assert sorted(page.execute("return $.asv.main_json.params.machine")) == ["alpha", "beta"]
    sources = json.loads((site / "vendor" / "SOURCES.json").read_text())
    requested = {path for path, status in server.requests[first:] if status == 200}
    assert {f"/{f['file']}" for f in sources["files"] if f["replaces"]} <= requested


def test_graph_has_a_point_per_commit(project: Project, server: StaticServer,
                                      page: Browser) -> None:
    page.get(server.url + asvsite.ASV_PAGE)
    page.wait_for("$.asv.main_json.benchmarks", "asv's index")
    selection = page.execute(
        "return $.asv.format_hash_string({location: [arguments[0]],"
        " params: {machine: ['alpha'], python: [arguments[1]]}})",
        DATA_BENCH, project_python(project))
    page.get(server.url + asvsite.ASV_PAGE + selection)
    series = page.wait_for("$('#main-graph').data('plot').getData().filter(s => s.data.length)"
                           ".map(s => [s.label, s.data])", "points in the graph")
    expected = {}
    for data, access, gc in itertools.product(DATA, ACCESS, GC):
        value = data_mib(data, access, gc)
        value = None if math.isnan(value) else value       # n/a: a gap in the line
        expected[f"access-{access}; data-{data}; gc-{gc}"] = [[0, value], [1, value]]
    assert dict(series) == expected


def graph_series(browser: Browser, url: str) -> int:
    browser.get("about:blank")          # a new page: a hash change alone keeps the old graph
    browser.get(url)
    browser.wait_for("$('#main-graph').data('plot') && $('#main-graph').data('plot')"
                     ".getData().length", "the graph")
    return browser.execute("return $('#main-graph').data('plot').getData().length")


def test_every_copy_graph_opens_with_at_most_12_series_and_the_legend_aside(
        committed_site: Path, committed_server: StaticServer, committed_page: Browser,
        screenshots: Path) -> None:
    index = json.loads((committed_site / "index.json").read_text())
    copies = [name for name, entry in index["benchmarks"].items()
              if is_copy_metric(name, None) and "access" in entry["param_names"]]
    # the three copy metrics of each data kind's class
    assert {name.rsplit(".", 1)[1] for name in copies} == set(COPY_METRICS)
    assert len(copies) == 3 * len({name.rsplit(".", 1)[0] for name in copies})
    environments = len(load_results(COMMITTED).environments())
    for name in copies:
        count = graph_series(committed_page, committed_server.url + asvsite.ASV_PAGE + "#" + name)
        assert 1 <= count <= 12, (name, count)
        # one environment: the newest python, with its newest numpy
        labels = committed_page.execute(
            "return $('#graphdisplay-state-params .btn.active').map((i, b) => $(b).text()).get()")
        assert "3.13.0" in labels and "2.4.6" in labels and "3.12.1" not in labels
        if count == 1:
            continue      # bench_gc's one combination per kind: a series with no label, no legend
        legend, plot = committed_page.execute(
            "const r = e => { const b = e.getBoundingClientRect();"
            " return [b.left, b.top, b.right, b.bottom]; };"
            " return [r(document.querySelector('#cowmem-legend table')),"
            " r(document.querySelector('#main-graph canvas'))]")
        assert legend[0] >= plot[2] or legend[1] >= plot[3], (legend, plot)   # beside, not over
    committed_page.screenshot(screenshots / "graph.png")
    assert_png(screenshots / "graph.png")
    # asv's own selection still works: every environment when the URL asks for them
    everything = committed_page.execute(
        "return $.asv.format_hash_string({location: [arguments[0]], params:"
        " $.asv.main_json.params})", f"{LIST_INT}.track_data_mib")
    assert graph_series(committed_page, committed_server.url + asvsite.ASV_PAGE + everything) \
        == asv_default_curves(index["benchmarks"][f"{LIST_INT}.track_data_mib"]["params"]) \
        * environments


def asv_default_curves(params: List[list]) -> int:
    """How many parameter combinations asv's graph shows by default, per environment.

    asv 0.6's graphdisplay.js takes each parameter's values in order while
    the product of the counts taken stays at most 8.
    """
    count = 1
    for values in params:
        count *= max(1, min(len(values), 8 // count))
    return count


def test_overview_shows_every_kind_in_every_environment(committed_server: StaticServer,
                                                         committed_page: Browser,
                                                         screenshots: Path) -> None:
    committed_page.get(committed_server.url)           # the site opens on the overview
    committed_page.wait_for("document.querySelector('#overview')", "the overview")
    table = committed_page.execute(
        "return {envs: [...document.querySelectorAll('#overview th.env')].map(t => t.dataset.env),"
        " kinds: [...document.querySelectorAll('#overview tbody tr')].map(r => r.dataset.kind),"
        " interned: [...document.querySelectorAll('#overview tr[data-kind=list_interned_str] td')]"
        ".map(td => [td.textContent, td.className]),"
        " links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))}")
    results = load_results(COMMITTED)
    assert table["envs"] == [e.name for e in results.environments()]
    assert sorted(table["kinds"]) == sorted(workloads.DATA_KINDS)      # each kind once
    # iterating interned strings copies nothing in 3.12 only: those cells are framed
    framed = [env for env, (_, cls) in zip(table["envs"], table["interned"]) if " d" in cls]
    assert framed and all("py3.12" in env for env in framed)
    assert "upgrade.html" in table["links"] and "asv.html" in table["links"]
    # the example links name the exact versions measured
    assert "upgrade.html#from=python%3D3.12.1&to=python%3D3.13.0" in table["links"]
    committed_page.screenshot(screenshots / "overview.png")


def upgrade_page(browser: Browser, server: StaticServer, hash_: str) -> Tuple[str, str]:
    """Open the upgrade page at ``#hash_``; its result's state (done, error...) and text."""
    browser.get("about:blank")
    browser.get(f"{server.url}upgrade.html#{hash_}")
    state = browser.wait_for("document.querySelector('#result').dataset.state !== 'loading'"
                             " && document.querySelector('#result').dataset.state",
                             "the upgrade page's result")
    return state, browser.execute("return document.querySelector('#result').textContent")


def upgrade_rows(browser: Browser, server: StaticServer, old: str, new: str) -> dict:
    state, shown = upgrade_page(browser, server, f"from={old}&to={new}")
    assert state == "done", shown
    return browser.execute(
        "return {rows: [...document.querySelectorAll('#changes tr.row')].map(r =>"
        " [r.dataset.from, r.dataset.to, r.dataset.params]),"
        " kinds: [...document.querySelectorAll('#changes tr.row td:nth-child(2)')].map(td =>"
        " td.textContent),"
        " summary: document.querySelector('#summary').textContent,"
        " versions: [...document.querySelectorAll('section.pair')].map(s =>"
        " [s.dataset.from, s.dataset.to, [...s.querySelectorAll('tbody tr')].map(tr =>"
        " [...tr.children].map(c => c.textContent))])}")


def python_comparison(results_dir: Path, old: str, new: str) -> gate.Comparison:
    results = load_results(results_dir)
    return gate.compare(*(selectors.select(s, lambda: results, None) for s in (old, new)))


def python_rows(results_dir: Path, old: str, new: str) -> List[list]:
    return [[row.old.environment.name, row.new.environment.name,
             " ".join(f"{k}={v}" for k, v in row.params.items())]
            for row in python_comparison(results_dir, old, new).rows]


def assert_page_is_the_gate(shown: dict, results_dir: Path, old: str, new: str) -> None:
    """The page lists the gate's rows, each of the gate's kind, and says the gate's counts."""
    comparison = python_comparison(results_dir, old, new)
    assert shown["rows"] == python_rows(results_dir, old, new)
    assert shown["kinds"] == [row.kind for row in comparison.rows]
    assert shown["summary"].endswith(f". {text.summary(comparison)}.")


def test_upgrade_page_lists_the_interned_strings_first(committed_server: StaticServer,
                                                        committed_page: Browser,
                                                        screenshots: Path) -> None:
    shown = upgrade_rows(committed_page, committed_server, "python=3.12", "python=3.13")
    # first, every combination whose copies inside the strings grew: the gate's order
    grew = [row for row in python_comparison(COMMITTED, "python=3.12", "python=3.13").rows
            if row.params["data"] == INTERNED and
            any(c.benchmark.endswith(".track_data_mib") for c in row.changes)]
    assert grew and all(params.startswith(f"data={INTERNED} ")
                        for _, _, params in shown["rows"][:len(grew)])
    # both sides' versions, per pair: 3.12.1 and 3.13.0 with each numpy and pandas both have
    results = load_results(COMMITTED)
    newer = sorted(env.name for env in results.environments() if env.python == "3.13.0")
    assert sorted(b for _, b, _ in shown["versions"]) == newer
    for old, new, rows in shown["versions"]:
        assert old == new.replace("py3.13.0", "py3.12.1")
        table = {label: (a, b) for label, a, b in rows}
        assert table["CPython"] == ("3.12.1", "3.13.0")
        assert table["numpy"][0] == table["numpy"][1] in new
        assert table["pandas"][0] == table["pandas"][1] in new
        assert table["THP"][0] == table["THP"][1] != "not recorded"
    committed_page.screenshot(screenshots / "upgrade.png")


def test_upgrade_page_shows_exact_versions(project: Project, server: StaticServer,
                                           page: Browser, screenshots: Path) -> None:
    shown = upgrade_rows(page, server, "python=3.12", "python=3.13")
    # one pair per machine; 3.12.1's list_int iterate copied nothing, 3.13.0's everything
    assert [r[2] for r in shown["rows"]] == ["data=list_int access=iterate gc=plain"] * 2
    for old, new, rows in shown["versions"]:
        table = {label: (a, b) for label, a, b in rows}
        assert table["CPython"] == ("3.12.1", "3.13.0")
        assert table["build"] == ("GIL", "GIL")
        assert table["numpy"] == ("2.2.6", "2.2.6")
        assert table["page size"] == ("4096 bytes", "4096 bytes")
        assert table["frame numbers"] == ("readable", "readable")
    page.screenshot(screenshots / "upgrade-exact.png")


@pytest.mark.parametrize("old, new", [
    ("python=3.12", "python=3.13"), ("numpy=1.26", "numpy=2.4"), ("python=3.9", "python=3.10"),
    ("virtualenv-py3.11", "virtualenv-py3.13"), ("python=3.12,numpy=1.26", "python=3.12,numpy=2.4"),
])
def test_page_and_gate_agree_on_the_committed_results(committed_server: StaticServer,
                                                      committed_page: Browser, old: str,
                                                      new: str) -> None:
    assert_page_is_the_gate(upgrade_rows(committed_page, committed_server, old, new),
                            COMMITTED, old, new)


@pytest.mark.parametrize("old, new, error", [
    ("python=3.99", "python=3.13", "no environment matches python=3.99"),
    ("python=3.12,python=3.13", "python=3.13", "no environment matches python=3.12,python=3.13"),
    ("foo=1", "python=3.13", "key one of commit, machine, numpy, pandas, psutil, pyarrow, python"),
    (f"commit={COMMIT[:6]}", "python=3.13", "give at least 8 characters of the hash"),
    ("machine=vm", "machine=vm", "select the same environments: nothing to compare"),
    ("machine=vm", "python=3.13", "has a counterpart in python=3.13"),
    (f"commit={COMMIT[:8]},python=3.12", "machine=vm,python=3.13", None),
    (" python=3.12 , numpy=2.4 ", "python=3.13,numpy=2.4", None),
    ("virtualenv-py3.12.1-numpy2.4.6-pandas2.2.3", "virtualenv-py3.13", None),
])
def test_page_and_gate_agree_on_odd_selectors(committed_server: StaticServer,
                                              committed_page: Browser, old: str, new: str,
                                              error: Optional[str]) -> None:
    """Both list the same rows, or both refuse the sides, the page in words (never blank)."""
    if error is None:
        assert_page_is_the_gate(upgrade_rows(committed_page, committed_server, old, new),
                                COMMITTED, old, new)
        return
    with pytest.raises(UnknownNameError) as refused:
        python_comparison(COMMITTED, old, new)
    assert error in str(refused.value).replace("'", "")      # the gate quotes the sides
    state, shown = upgrade_page(committed_page, committed_server, f"from={old}&to={new}")
    assert state == "error" and error in shown


def test_a_hash_that_is_not_percent_encoding_is_an_error_in_words(
        committed_server: StaticServer, committed_page: Browser) -> None:
    state, shown = upgrade_page(committed_page, committed_server, "from=%E0%A4%A&to=python%3D3.13")
    assert state == "error"
    assert shown.startswith(f"no environment matches %E0%A4%A at commit {COMMIT[:8]}; environments: ")


@pytest.mark.parametrize("old, new", [
    ("python=3.12", "python=3.13"), ("python=3.11", "python=3.12.1"), ("machine=alpha", "machine=beta"),
])
def test_page_and_gate_agree_on_results_with_samples(project: Project, server: StaticServer,
                                                     page: Browser, old: str, new: str) -> None:
    assert_page_is_the_gate(upgrade_rows(page, server, old, new), project.results, old, new)


def test_regressions_page_says_why_it_is_empty(server: StaticServer, page: Browser,
                                               screenshots: Path) -> None:
    page.get(server.url + asvsite.ASV_PAGE + "#regressions")
    note = page.wait_for("$('#cowmem-regressions-note:visible').text()", "the note")
    assert "hold 2 commits" in " ".join(note.split()) or "2 commits" in note
    assert "upgrade page" in note


def test_report_page_shows_every_environment(committed_site: Path,
                                             committed_server: StaticServer,
                                             committed_page: Browser, screenshots: Path) -> None:
    committed_page.get(committed_server.url + "cowmem-report.html")
    committed_page.wait_for("document.querySelector('table.heatmap')", "the report's table")
    envs = committed_page.execute(
        "return [...document.querySelectorAll('table.heatmap')].map(t =>"
        " [...t.querySelectorAll('th.env')].map(th => th.dataset.env))")
    every = [e.name for e in load_results(COMMITTED).environments()]
    assert envs and all(e == every for e in envs)
    assert (committed_site / "cowmem-report.html").stat().st_size < 500 * 1024
    committed_page.screenshot(screenshots / "report.png")


# --- errors ---------------------------------------------------------------------------

def test_publish_refuses_a_site_directory_holding_the_results(project: Project,
                                                             npm_cache: Path) -> None:
    before = snapshot(project.results)
    for html_dir in (project.results, project.root):
        done = run_cowmem("publish", "--html-dir", str(html_dir), "--vendor-cache",
                          str(npm_cache), cwd=project.root)
        assert_one_line_error(done, "publish", f"the site directory {html_dir} would hold")
    assert snapshot(project.results) == before


def test_publish_without_results_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "asv.conf.json").write_text(json.dumps({"version": 1, "repo": ".",
                                                        "branches": ["main"]}))
    done = run_cowmem("publish", cwd=tmp_path)
    assert_one_line_error(done, "publish", f"results directory {tmp_path / 'results'} "
                          "does not exist (run `asv run` first)")


def test_unknown_external_library_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(
        '<script src="https://code.jquery.com/jquery-3.3.1.min.js"></script>'
        '<script src="https://cdn.example.org/newlib.js"></script>')
    with pytest.raises(PublishError, match="loads https://cdn.example.org/newlib.js"):
        vendor.localize(tmp_path, "index.html", {})


def test_tampered_cached_tarball_is_refused(tmp_path: Path) -> None:
    package = vendor.LOCAL_COPIES["https://code.jquery.com/jquery-3.3.1.min.js"].package
    (tmp_path / package.tarball).write_bytes(b"not the registry's tarball")
    with pytest.raises(PublishError, match="not jquery@3.3.1 as the npm registry"):
        vendor.fetch_packages([package], tmp_path)


def test_missing_npm_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    package = vendor.LOCAL_COPIES["https://code.jquery.com/jquery-3.3.1.min.js"].package
    with pytest.raises(PublishError, match="npm is needed once to fetch jquery@3.3.1"):
        vendor.fetch_packages([package], tmp_path / "cache")
