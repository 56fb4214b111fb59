"""``cowmem publish``: asv's site rendering with no network, with the report page, in Chromium.

The site is published from real asv results of a tiny suite on two machines
(asv_project.py), served on 127.0.0.1, and loaded in headless Chromium that
cannot resolve any other host.  Screenshots of each page go to
``$COWMEM_SCREENSHOT_DIR``, else ``<pytest's basetemp>/screenshots``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from pathlib import Path
from typing import Iterator

import asv
import pytest

from asv_project import (ACCESS, CHILD_BENCH, DATA, DATA_BENCH, GC, Project, add_environment,
                         assert_one_line_error, build_project, data_mib, run_cowmem, snapshot)
from browser import Browser, StaticServer
from capabilities import require
from cowmem import publish, report

BENCHMARKS = [CHILD_BENCH, DATA_BENCH]


@pytest.fixture(scope="module")
def npm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("registry")
    return tmp_path_factory.mktemp("npm-cache")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Real results on two machines, plus two more environments on alpha and one on beta."""
    real = build_project(tmp_path_factory.getbasetemp())
    project = real.copy(tmp_path_factory.mktemp("site") / "project")
    for machine, python in (("alpha", "3.11"), ("alpha", "3.12"), ("beta", "3.12")):
        add_environment(project.results_file(machine, project.commits[1]), python, "2.2.6")
    return project


@pytest.fixture(scope="module")
def site(project: Project, npm_cache: Path) -> Path:
    before = snapshot(project.results)
    done = run_cowmem("publish", "--vendor-cache", str(npm_cache), cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert snapshot(project.results) == before
    return project.root / "html"


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
    page = (site / "index.html").read_text(encoding="utf-8")
    assert publish.external_references(page) == []
    # asv's template, tag for tag, with each CDN file replaced by its local copy
    template = Path(asv.__file__).parent / "www" / "index.html"
    original = publish.resource_references(template.read_text(encoding="utf-8"))
    local = publish.resource_references(page)
    assert local == [f"vendor/{publish.LOCAL_COPIES[url].package.name}/"
                     f"{publish.LOCAL_COPIES[url].path}" if url in publish.LOCAL_COPIES else url
                     for url in original]
    for url in local:
        assert (site / url).is_file(), url
    sources = json.loads((site / "vendor" / "SOURCES.json").read_text())
    assert set(sources["packages"]) == {c.package.spec for c in publish.LOCAL_COPIES.values()}
    assert {f["replaces"] for f in sources["files"]} - {None} == set(publish.LOCAL_COPIES)
    for entry in sources["files"]:
        assert (site / entry["file"]).is_file()
    assert f'<a href="{publish.REPORT_PAGE}"' in page
    assert (site / publish.REPORT_PAGE).is_file()


def test_integrity_kept_where_the_registry_file_is_the_cdn_file(site: Path) -> None:
    page = (site / "index.html").read_text(encoding="utf-8")
    # jquery's CDN and jsdelivr serve the npm files byte for byte: the page still
    # checks them; cdnjs minified flot itself, so those tags lose the attribute.
    assert 'src="vendor/jquery/dist/jquery.min.js" integrity="sha256-' in page
    assert 'href="vendor/bootstrap/dist/css/bootstrap.min.css" integrity="sha256-' in page
    assert 'src="vendor/flot/jquery.flot.js" onerror=' in page
    assert "crossorigin" not in page


# --- in the browser, offline ----------------------------------------------------------

@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[StaticServer]:
    with StaticServer(site) as served:
        yield served


@pytest.fixture
def page(server: StaticServer, browser: Browser) -> Iterator[Browser]:
    """The browser; after the test, nothing it asked for failed or came from another host."""
    first = len(server.requests)
    yield browser
    outside = browser.execute("return performance.getEntriesByType('resource')"
                              ".map(e => e.name).filter(n => !n.startsWith(location.origin))")
    assert outside == []
    failed = {path for path, status in server.requests[first:] if status >= 400}
    assert failed <= {"/favicon.ico"}, failed   # the report page has no icon; Chromium asks


def test_site_scripts_load_offline(site: Path, server: StaticServer, page: Browser,
                                   screenshots: Path) -> None:
    first = len(server.requests)
    page.get(server.url + "index.html")
    page.wait_for("$.asv.main_json.benchmarks && $('.benchmark-container').length",
                  "asv's benchmark grid")
    assert page.execute("return location.pathname") == "/index.html"   # not error.html
    loaded = page.execute(
        "return {plot: typeof $.plot, stupidtable: typeof $.fn.stupidtable,"
        " md5: typeof md5, bootstrap: typeof $.fn.modal,"
        " plugins: $.plot.plugins.map(p => p.name),"
        " navbar_height: getComputedStyle(document.querySelector('.navbar')).minHeight}")
    assert loaded["plot"] == loaded["stupidtable"] == loaded["md5"] == "function"
    assert loaded["bootstrap"] == "function"
    assert {"time", "selection", "categories", "orderBars"} <= set(loaded["plugins"])
    assert loaded["navbar_height"] == "50px"        # bootstrap.min.css styles the navbar
    # both machines' results are in the one site
    assert sorted(page.execute("return $.asv.main_json.params.machine")) == ["alpha", "beta"]
    assert page.execute("return $('.benchmark-container .benchmark-text').map("
                        "(i, e) => $(e).text()).get()") == [b.split(".", 1)[1] for b in BENCHMARKS]
    sources = json.loads((site / "vendor" / "SOURCES.json").read_text())
    requested = {path for path, status in server.requests[first:] if status == 200}
    assert {f"/{f['file']}" for f in sources["files"] if f["replaces"]} <= requested
    assert_png(page.screenshot(screenshots / "grid.png"))


def test_benchmark_list_shows_every_parameter_combination(server: StaticServer, page: Browser,
                                                          screenshots: Path) -> None:
    page.get(server.url + "index.html#summarylist")
    page.wait_for("$('#summarylist-body table tbody tr').length", "the benchmark list")
    names = page.execute("return $('#summarylist-body table tbody tr')"
                         ".map((i, tr) => $(tr).find('td').first().text()).get()")
    assert sorted(names) == sorted(f"{bench} {combination!r}" for bench in BENCHMARKS
                                   for combination in itertools.product(DATA, ACCESS, GC))
    assert_png(page.screenshot(screenshots / "list.png"))


def test_graph_has_a_point_per_commit(project: Project, server: StaticServer, page: Browser,
                                      screenshots: Path) -> None:
    page.get(server.url + "index.html")
    page.wait_for("$.asv.main_json.benchmarks", "asv's index")
    # alpha's own interpreter ran both commits
    selection = page.execute(
        "return $.asv.format_hash_string({location: [arguments[0]],"
        " params: {machine: ['alpha'], python: [arguments[1]]}})",
        DATA_BENCH, project_python(project))
    page.get(server.url + "index.html" + selection)
    series = page.wait_for("$('#main-graph').data('plot').getData().filter(s => s.data.length)"
                           ".map(s => [s.label, s.data])", "points in the graph")
    expected = {}
    for data, access, gc in itertools.product(DATA, ACCESS, GC):
        value = data_mib(data, access, gc)
        value = None if math.isnan(value) else value       # n/a: a gap in the line
        expected[f"access-{access}; data-{data}; gc-{gc}"] = [[0, value], [1, value]]
    assert dict(series) == expected
    assert_png(page.screenshot(screenshots / "graph.png"))


def test_report_page_shows_every_environment(project: Project, server: StaticServer,
                                             page: Browser, screenshots: Path) -> None:
    page.get(server.url + "index.html")
    href = page.wait_for("$('#nav-li-cowmem-report a').attr('href')", "the report's link")
    page.get(server.url + href)
    page.wait_for("document.querySelector('table.heatmap')", "the report's table")
    envs = page.execute(
        "return [...document.querySelectorAll('table.heatmap')].map(t =>"
        " [...t.querySelectorAll('th.env')].map(th => th.dataset.machine + ' '"
        " + th.dataset.env))")
    results = report.load_results(project.results)
    every = [f"{e.machine} {e.name}" for e in results.environments()]
    assert len(every) == 5
    assert envs == [every] * len(BENCHMARKS)
    # two machines: each table's header labels its columns with their machine
    machines = page.execute(
        "return [...document.querySelectorAll('table.heatmap')].map(t =>"
        " [...t.querySelectorAll('th.machine')].map(th => [th.textContent, th.colSpan]))")
    assert machines == [[["alpha", 3], ["beta", 2]]] * len(BENCHMARKS)
    assert_png(page.screenshot(screenshots / "report.png"))


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
    with pytest.raises(publish.PublishError, match="loads https://cdn.example.org/newlib.js"):
        publish.localize(tmp_path, {})


def test_tampered_cached_tarball_is_refused(tmp_path: Path) -> None:
    package = publish.LOCAL_COPIES["https://code.jquery.com/jquery-3.3.1.min.js"].package
    (tmp_path / package.tarball).write_bytes(b"not the registry's tarball")
    with pytest.raises(publish.PublishError, match="not jquery@3.3.1 as the npm registry"):
        publish.fetch_packages([package], tmp_path)


def test_missing_npm_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    package = publish.LOCAL_COPIES["https://code.jquery.com/jquery-3.3.1.min.js"].package
    with pytest.raises(publish.PublishError, match="npm is needed once to fetch jquery@3.3.1"):
        publish.fetch_packages([package], tmp_path / "cache")
