"""cowmem's outputs, one module per output: text, the HTML report page, the site's pages.

HTML comes from the Jinja templates in ``templates/`` with the styles and
scripts in ``assets/``; no module builds markup itself.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"


@functools.lru_cache(maxsize=None)
def templates() -> Any:
    """The Jinja environment over ``templates/``, autoescaping the HTML templates.

    Imported on first use: the text outputs need no jinja2.
    """
    import jinja2
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    environment.globals["asset"] = asset
    return environment


def asset(name: str) -> str:
    """The text of one file of ``assets/`` (for pages that inline their styles)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def render(template: str, **context: Any) -> str:
    """One template rendered with ``context``."""
    return templates().get_template(template).render(**context)
