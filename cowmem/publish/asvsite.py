"""Running ``asv publish`` and fitting asv's pages into cowmem's site.

asv's page moves from index.html to ``asv.html`` (the site opens on
cowmem's overview), gets links to cowmem's pages in its navigation bar, and
three changes to its graph page:

- by default one environment (the newest) is selected when the URL names
  none, instead of every environment (``cowmem-asv.js``);
- the legend is drawn beside the plot instead of over it;
- the Regressions page says why it is empty.

Each change is made at a fixed place of asv 0.6's files; an asv whose files
lack one of them is refused by name, as an unknown CDN library is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

from ..report.config import AsvConfig
from ..reporters import ASSETS, render
from . import PublishError

ASV_PAGE = "asv.html"
SCRIPT = "cowmem-asv.js"

# Where each change goes: (file, the text found there exactly once, the
# template that replaces it; the template gets the text found as ``anchor``).
_CHANGES: List[Tuple[str, str, str]] = [
    # select the newest environment after asv's default of all of them
    ("graphdisplay.js", "        if (state_selection !== null) {\n"
                        "            /* Select a specific generic parameter state */",
     "asv/default_environment.js"),
    # draw the legend into the column beside the plot
    ("graphdisplay.js", "            legend: {\n                show: show_legend,\n",
     "asv/legend_container.js"),
    ("index.html", '<li id="nav-li-graphdisplay">', "asv/nav.html"),
    ("index.html", '<div style="position: absolute; left: 220px; top: 60px; bottom: 10px; '
                   'right: 20px;">', "asv/legend.html"),
    ("index.html", '<div id="regressions-body">', "asv/regressions_note.html"),
    ("index.html", '<link href="asv.css" rel="stylesheet" type="text/css"/>', "asv/script.html"),
]


def run_asv_publish(config: AsvConfig, results: Path, site: Path, pull: bool) -> None:
    """``asv publish`` of ``results`` into ``site`` (which asv first deletes).

    asv publishes the results directory its configuration names; for another
    one it gets a copy of the configuration naming that directory, with
    every path made absolute.
    """
    for keep in (results, config.path.parent):
        if site == keep or site in keep.parents:
            raise PublishError(f"the site directory {site} would hold {keep}, and asv "
                               "publish deletes the site directory first; choose another")
    if not (results / "benchmarks.json").is_file():
        raise PublishError(f"{results} has no benchmarks.json, which asv publish needs "
                           "(asv run writes it beside the machines' folders)")
    with tempfile.TemporaryDirectory(prefix="cowmem-publish-") as scratch:
        settings = dict(config.settings)
        base = config.path.parent
        for key, default in (("repo", "."), ("benchmark_dir", "benchmarks"),
                             ("env_dir", "env")):
            value = settings.get(key, default)
            if key != "repo" or "://" not in str(value):
                settings[key] = str((base / str(value)).resolve())
        settings["results_dir"] = str(results.resolve())
        settings["html_dir"] = str(site)
        conf = Path(scratch) / "asv.conf.json"
        conf.write_text(json.dumps(settings), encoding="utf-8")
        command = [sys.executable, "-m", "asv", "publish", "--config", str(conf)] + (
            [] if pull else ["--no-pull"])
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, stdin=subprocess.DEVNULL, cwd=str(base))
    if done.returncode != 0 or not (site / "index.html").is_file():
        tail = "\n".join(done.stdout.strip().splitlines()[-5:])
        raise PublishError(f"`asv publish` failed (exit {done.returncode}):\n{tail}")


def fit_asv_pages(site: Path, report_page: str, commits: int) -> None:
    """Make the changes listed in this module's doc, then move asv's page to ``asv.html``.

    ``commits`` is how many commits the published results hold (the
    Regressions page says why it is empty).
    """
    context = {"report_page": report_page, "commits": commits, "script": SCRIPT}
    for name, anchor, template in _CHANGES:
        path = site / name
        text = path.read_text(encoding="utf-8")
        found = text.count(anchor)
        if found != 1:
            first_line = anchor.strip().splitlines()[0]
            raise PublishError(f"asv's {name} is not the one cowmem knows (asv 0.6): "
                               f"{'no' if not found else found} {first_line!r} in it; its "
                               "graphs would show every environment at once")
        text = text.replace(anchor, render(template, anchor=anchor, **context), 1)
        path.write_text(text, encoding="utf-8")
    shutil.copyfile(ASSETS / SCRIPT, site / SCRIPT)
    (site / "index.html").replace(site / ASV_PAGE)
