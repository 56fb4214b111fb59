"""The timeline plot: each forked child's copied MiB over time, by matplotlib.

matplotlib draws it because it writes PNG (and SVG, PDF) by itself, with
no browser or display, and is the best kept plotting library there is.
It is an optional dependency (``pip install 'cowmem[plot]'``); ``check``
says so before watching starts, not after.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, List, Tuple

from ..errors import CowmemError
from .watcher import Sample

FORMATS = (".png", ".svg", ".pdf")


class PlotUnavailableError(CowmemError, ValueError):
    """The plot cannot be written: matplotlib is missing or the format is unknown."""


def check(path: str) -> None:
    """Raise PlotUnavailableError unless ``path`` can be plotted to."""
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise PlotUnavailableError(f"the plot's file name must end in {', '.join(FORMATS)}: {path!r}")
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailableError("the plot needs matplotlib: pip install 'cowmem[plot]'")


class Timeline:
    """The copied bytes of every forked child, sample by sample."""

    def __init__(self) -> None:
        self.series: Dict[int, List[Tuple[float, float]]] = {}
        self.names: Dict[int, str] = {}

    def add(self, sample: Sample) -> None:
        for row in sample.children():
            copied = row.figures.copied_bytes
            if copied is None:
                copied = row.figures.copied_at_most_bytes
            self.series.setdefault(row.pid, []).append((sample.elapsed, copied / 2**20))
            self.names[row.pid] = row.name

    def save(self, path: str, title: str = "copied since the fork") -> None:
        """Write the plot to ``path`` (its suffix picks the format)."""
        # The object API, not pyplot: no global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8, 4), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for pid, points in self.series.items():
            times, mib = zip(*points)
            axes.plot(times, mib, marker="." if len(points) < 40 else None, label=f"{pid}")
        axes.set_xlabel("seconds since watching began")
        axes.set_ylabel("copied MiB")
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        if self.series:
            axes.legend(title="worker pid", fontsize="small", loc="upper left")
        figure.savefig(path)
