"""The site's JavaScript libraries, from the npm registry's packages instead of public CDNs.

``asv publish`` writes pages that load jQuery, flot, bootstrap and three small
plugins from public CDNs, so on a machine without internet access they show
only asv's error page.  Here every one of those tags is pointed at a local
copy taken from the npm registry's package of the same library (fetched once
with ``npm pack`` into a cache, checked against the tarball digest pinned
below, never committed), with a record of where each file came from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import PublishError

VENDOR_DIR = "vendor"
SOURCES_FILE = "SOURCES.json"


@dataclass(frozen=True)
class NpmPackage:
    """One npm registry package, pinned by the digest of its tarball (npm's dist.integrity)."""

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives the tarball."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


@dataclass(frozen=True)
class LocalCopy:
    """Where a CDN file's local copy comes from: a file inside an npm package.

    ``also`` lists files the main one refers to by relative path
    (bootstrap's CSS loads its icon fonts from ../fonts/).
    """

    package: NpmPackage
    path: str
    also: Tuple[str, ...] = ()


_JQUERY = NpmPackage("jquery", "3.3.1", "sha512-Ubldcmxp5np52/ENotGxlLe6aGMvmF4R8S6tZjsP6Knsaxd/"
                     "xp3Zrh50cG93lR6nPXyUFwzN3ZSOQI0wRJNdGg==")
_FLOT = NpmPackage("flot", "0.8.3", "sha512-xg2otcTJDvS+ERK+my4wxG/ASq90QURXtoM4LhacCq0jQW2jby"
                   "jdttbRNqU2cPykrpMvJ6b2uSp6SAgYAzj9tQ==")
_ORDERBARS = NpmPackage("flot-orderbars", "1.0.0", "sha512-Jv51fvzevUjNXEeozpwEKfPjhiZhfiJddv0W"
                        "HjduUTCmSF+7T5K7C9c9Y1wIVmUhDBv5fLMjgbwKecT0GIKPZA==")
# cdnjs serves stupidtable 1.0.1; the npm registry has only 1.1.3 of it, which
# keeps the two calls asv makes (.stupidtable(sorters) and .stupidsort(dir)).
_STUPIDTABLE = NpmPackage("stupid-table-plugin", "1.1.3", "sha512-2Vk7XouQPxUQPRe9w0Fu7ZZ8kHLK"
                          "7rDoLMsCgtKxRNJ7f4dSOGvW9CkHsq5wD6QsaEnWoyLBYH3xOEsrK3yWBg==")
_MD5 = NpmPackage("blueimp-md5", "2.19.0", "sha512-DRQrD6gJyy8FbiE4s+bDoXS9hiW3Vbx5uCdwvcCf3zL"
                  "HL+Iv7LtGHLpr+GZV8rHG8tK766FGYBwRbu8pELTt+w==")
_BOOTSTRAP = NpmPackage("bootstrap", "3.1.1", "sha512-TAzqS8E/ISpVHP29gYhy+1NSV+FJwApDVQhDfgLY"
                        "sIuUDJiqJzH2DfORN5tiu+Ie2iBLrzEG34t4Rf465cigqg==")
_GLYPHICONS = tuple(f"dist/fonts/glyphicons-halflings-regular.{ext}"
                    for ext in ("eot", "svg", "ttf", "woff"))

# Every external file asv 0.6's www/index.html loads.  An asv whose page
# loads anything else is refused by name rather than published half-online.
# Where the registry has only the unminified file of the same release (flot)
# the page gets that one.
LOCAL_COPIES: Mapping[str, LocalCopy] = {
    "https://code.jquery.com/jquery-3.3.1.min.js": LocalCopy(_JQUERY, "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js":
        LocalCopy(_FLOT, "jquery.flot.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        LocalCopy(_FLOT, "jquery.flot.time.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        LocalCopy(_FLOT, "jquery.flot.selection.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        LocalCopy(_FLOT, "jquery.flot.categories.js"),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        LocalCopy(_ORDERBARS, "js/jquery.flot.orderBars.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        LocalCopy(_STUPIDTABLE, "stupidtable.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js":
        LocalCopy(_MD5, "js/md5.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        LocalCopy(_BOOTSTRAP, "dist/js/bootstrap.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        LocalCopy(_BOOTSTRAP, "dist/css/bootstrap.min.css", _GLYPHICONS),
}

# A <script> or <link> tag, and one attribute inside a tag.
_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = r'\s{name}\s*=\s*"([^"]*)"'


def default_vendor_cache() -> Path:
    """``$XDG_CACHE_HOME/cowmem/npm``, else ``~/.cache/cowmem/npm``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cowmem" / "npm"


# --- the libraries' tarballs ------------------------------------------------------

def fetch_packages(packages: Sequence[NpmPackage], cache: Path) -> Dict[NpmPackage, Path]:
    """The tarball of each package in ``cache``, fetched with ``npm pack`` when missing.

    Every tarball, cached or new, must match its pinned digest.
    """
    missing = [p for p in packages if not (cache / p.tarball).is_file()]
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            raise PublishError("npm is needed once to fetch " + ", ".join(p.spec for p in missing)
                               + f" into {cache} (or copy their `npm pack` tarballs there)")
        cache.mkdir(parents=True, exist_ok=True)
        command = [npm, "pack", "--silent", "--ignore-scripts", "--pack-destination", str(cache)]
        done = subprocess.run(command + [p.spec for p in missing], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise PublishError(f"`npm pack` could not fetch {', '.join(p.spec for p in missing)}"
                               f": {reason}")
    tarballs = {}
    for package in packages:
        path = cache / package.tarball
        if not path.is_file():
            raise PublishError(f"`npm pack` left no {path}")
        digest = _integrity(path.read_bytes(), "sha512")
        if digest != package.integrity:
            raise PublishError(f"{path} is not {package.spec} as the npm registry publishes it "
                               f"(digest {digest}); delete it to fetch it again")
        tarballs[package] = path
    return tarballs


def _integrity(data: bytes, algorithm: str) -> str:
    """A subresource-integrity string, as npm and the HTML integrity attribute write it."""
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def _package_file(tarball: Path, path: str) -> bytes:
    with tarfile.open(tarball) as archive:
        try:
            member = archive.extractfile(f"package/{path}")
        except KeyError:
            member = None
        if member is None:
            raise PublishError(f"{tarball.name} has no file {path}")
        return member.read()


def _package_license(tarball: Path) -> Tuple[Optional[str], Optional[bytes]]:
    """The package's declared license and its top-level LICENSE file, when it has one."""
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile("package/package.json").read())
        text_name = next((n for n in sorted(names)
                          if re.fullmatch(r"package/(LICEN[CS]E|COPYING)[^/]*", n, re.I)), None)
        text = archive.extractfile(text_name).read() if text_name else None
    declared = manifest.get("license")
    return (declared if isinstance(declared, str) else None), text


# --- rewriting the site ---------------------------------------------------------

def resource_references(page: str) -> List[str]:
    """The URLs the page's <script> and <link> tags load, in page order."""
    urls = []
    for tag in _TAG.findall(page):
        for name in ("src", "href"):
            match = re.search(_ATTRIBUTE.format(name=name), tag)
            if match:
                urls.append(match.group(1))
    return urls


def external_references(page: str) -> List[str]:
    """The URLs the page's <script> and <link> tags load from other hosts."""
    return [url for url in resource_references(page) if re.match(r"([a-z]+:)?//", url, re.I)]


def localize(site: Path, page_name: str, tarballs: Mapping[NpmPackage, Path]) -> List[dict]:
    """Copy the libraries into ``site/vendor`` and point the page ``page_name`` at them.

    Returns what was copied, for SOURCES.json.  An integrity attribute is
    kept when the local copy has that very digest (the jsdelivr and jquery
    CDNs serve the npm files byte for byte), and dropped otherwise.
    """
    index = site / page_name
    page = index.read_text(encoding="utf-8")
    unknown = [url for url in external_references(page) if url not in LOCAL_COPIES]
    if unknown:
        raise PublishError(f"asv's {page_name} loads " + ", ".join(unknown) + ", for which cowmem "
                           "has no local copy (a newer asv?); the site would not render offline")
    copied: Dict[Tuple[NpmPackage, str], dict] = {}

    def local(url: str) -> str:
        copy = LOCAL_COPIES[url]
        tarball = tarballs[copy.package]
        for path in (copy.path,) + copy.also:
            if (copy.package, path) not in copied:
                data = _package_file(tarball, path)
                target = site / VENDOR_DIR / copy.package.name / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                copied[(copy.package, path)] = {
                    "file": target.relative_to(site).as_posix(), "package": copy.package.spec,
                    "path_in_package": path, "tarball_integrity": copy.package.integrity,
                    "replaces": url if path == copy.path else None}
        return f"{VENDOR_DIR}/{copy.package.name}/{copy.path}"

    def rewrite(tag_match: re.Match) -> str:
        tag = tag_match.group(0)
        for name in ("src", "href"):
            attr = re.search(_ATTRIBUTE.format(name=name), tag)
            if attr and attr.group(1) in LOCAL_COPIES:
                path = local(attr.group(1))
                tag = tag[:attr.start(1)] + path + tag[attr.end(1):]
                tag = _drop_stale_integrity(tag, (site / path).read_bytes())
        return tag

    index.write_text(_TAG.sub(rewrite, page), encoding="utf-8")
    return list(copied.values())


def _drop_stale_integrity(tag: str, data: bytes) -> str:
    """Keep ``integrity`` when it matches ``data``; drop it otherwise, and the CORS attributes."""
    integrity = re.search(_ATTRIBUTE.format(name="integrity"), tag)
    if integrity:
        algorithm = integrity.group(1).split("-", 1)[0]
        if algorithm not in ("sha256", "sha384", "sha512") or \
                _integrity(data, algorithm) != integrity.group(1):
            tag = tag[:integrity.start()] + tag[integrity.end():]
    for name in ("crossorigin", "referrerpolicy"):
        tag = re.sub(_ATTRIBUTE.format(name=name), "", tag)
    return tag


def write_sources(site: Path, copied: List[dict], tarballs: Mapping[NpmPackage, Path]) -> None:
    """Record where every local library file came from, with each package's license."""
    packages = {}
    for package, tarball in sorted(tarballs.items(), key=lambda item: item[0].spec):
        declared, text = _package_license(tarball)
        entry = {"registry": "npm", "package": package.name, "version": package.version,
                 "tarball_integrity": package.integrity, "license": declared}
        if text is not None:
            license_path = site / VENDOR_DIR / package.name / "LICENSE"
            license_path.write_bytes(text)
            entry["license_file"] = license_path.relative_to(site).as_posix()
        packages[package.spec] = entry
    (site / VENDOR_DIR / SOURCES_FILE).write_text(
        json.dumps({"packages": packages, "files": copied}, indent=2) + "\n", encoding="utf-8")
