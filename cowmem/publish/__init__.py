"""``cowmem publish``: a site that renders with no network, opening on cowmem's own pages.

- :mod:`.vendor` the JavaScript libraries, from npm registry packages instead of CDNs;
- :mod:`.asvsite` running ``asv publish`` and fitting asv's pages into the site;
- :mod:`.build` the whole site: asv's pages, the overview, the upgrade page, the report.
"""

from __future__ import annotations

from ..errors import CowmemError


class PublishError(CowmemError):
    """The site could not be built: asv, npm or a library copy failed, or bad paths."""
