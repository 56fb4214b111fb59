"""The paths an asv configuration names, read by asv itself (its JSON allows comments)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

from .results import ResultsError


@dataclass(frozen=True)
class AsvConfig:
    """An asv configuration's paths, made absolute (asv resolves them from the file's folder)."""

    path: Path
    results: Path
    html: Path
    settings: Dict[str, Any]     # the file's keys as asv read them


def read_asv_config(path: Union[str, Path]) -> AsvConfig:
    """Read asv's configuration file; ResultsError when it is missing or asv is not installed."""
    config = Path(path).resolve()
    if not config.is_file():
        raise ResultsError(f"no asv configuration file {path}; pass --config PATH "
                           "(or --results DIR to the report)")
    try:
        from asv import util as asv_util
        from asv.config import Config
    except ImportError:
        raise ResultsError(f"reading {path} needs asv, which {sys.executable} does not have; "
                           "`pip install asv`, or pass --results DIR") from None
    try:
        conf = Config.load(str(config))
        settings = asv_util.load_json(str(config), js_comments=True)
    except asv_util.UserError as exc:
        raise ResultsError(f"cannot read asv's configuration: {exc}") from None
    return AsvConfig(config, (config.parent / conf.results_dir).resolve(),
                     (config.parent / conf.html_dir).resolve(), settings)
