"""The overview as a Markdown table: each data kind's headline access, one column per environment.

The same rows as the site's first page (:func:`cowmem.reporters.site.headline_rows`),
for a README, a pull request or an issue.  A cell that differs from its
row's most common value is in bold, as the page frames it.
"""

from __future__ import annotations

from typing import List

from ..report.table import Table
from .site import headline_rows


def render_overview(table: Table) -> str:
    """``| data | access | py3.12.1 numpy 2.4.6 | ...`` in bytes per element, one row per kind."""
    header = ["data", "access"] + [" ".join(lines) for lines in table.column_labels()]
    lines: List[str] = [_row(header), _row(["---", "---"] + ["---:"] * len(table.columns))]
    for row in headline_rows(table):
        access = row["params"].get("access", "")
        gc = row["params"].get("gc")
        if gc and gc != "plain":
            access += f" ({gc})"
        cells = [f"**{text}**" if differs else text
                 for (text, _), differs in zip(row["cells"], row["differs"])]
        lines.append(_row([row["kind"], access] + cells))
    return "\n".join(lines) + "\n"


def _row(cells: List[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
