"""Make ``asv publish``'s site work offline: copy the vendored JavaScript/CSS
(``suite/asv_www/vendor/``) into the site and point ``index.html`` at it::

    python -m suite.asv_offline results/asv/html

asv 0.6.6's ``index.html`` loads jQuery, flot (and its plugins), stupidtable, blueimp-md5 and
Bootstrap from CDNs; without network access it shows only its "external dependencies failed to
load" page. Each CDN tag is replaced by a tag for the local copy (without the CDN's
``integrity`` hash, which belongs to the CDN's build); a CDN URL this module does not know is an
error naming it, so a newer asv cannot silently keep an online dependency.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

VENDOR_DIR = Path(__file__).parent / "asv_www" / "vendor"
SITE_VENDOR = "vendor"  # the folder inside the site

#: CDN URL (as asv 0.6.6 writes it) -> path under suite/asv_www/vendor/
CDN_FILES: dict[str, str] = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": (
        "flot-0.8.3/jquery.flot.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": (
        "flot-0.8.3/jquery.flot.time.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": (
        "flot-0.8.3/jquery.flot.selection.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": (
        "flot-0.8.3/jquery.flot.categories.js"
    ),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": (
        "flot-orderbars-1.0.0/jquery.flot.orderBars.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": (
        "stupid-table-plugin-1.1.3/stupidtable.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": (
        "blueimp-md5-2.19.0/md5.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": (
        "bootstrap-3.1.1/js/bootstrap.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": (
        "bootstrap-3.1.1/css/bootstrap.min.css"
    ),
}

_TAG = re.compile(r"<(script|link)\b[^>]*?\b(?:src|href)=\"(https?://[^\"]+)\"[^>]*>", re.I)


class OfflineSiteError(ValueError):
    """The site cannot be made offline (no index.html, an unknown CDN URL)."""


def _local_tag(kind: str, local: str) -> str:
    if kind.lower() == "link":
        return f'<link rel="stylesheet" href="{local}">'
    return f'<script src="{local}" onerror="js_load_failure()">'


def rewrite_index(html: str) -> str:
    """``html`` with every CDN ``<script src>``/``<link href>`` tag of :data:`CDN_FILES`
    pointing at ``vendor/<file>``; links to web pages (``<a href>``) are left alone.

    Raises:
        OfflineSiteError: a script or stylesheet tag loads a URL not in :data:`CDN_FILES`.
    """

    def replace(match: re.Match[str]) -> str:
        kind, url = match.group(1), match.group(2)
        if url not in CDN_FILES:
            raise OfflineSiteError(
                f"asv's index.html loads {url!r}, which is not vendored; known: {sorted(CDN_FILES)}"
            )
        return _local_tag(kind, f"{SITE_VENDOR}/{CDN_FILES[url]}")

    return _TAG.sub(replace, html)


def online_dependencies(html: str) -> list[str]:
    """The http(s) URLs that ``<script>``/``<link>`` tags of ``html`` still load."""
    return [m.group(2) for m in _TAG.finditer(html)]


def make_offline(html_dir: Path, vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """Copy ``vendor_dir`` to ``html_dir/vendor`` and rewrite ``html_dir/index.html``.

    Returns:
        the local paths (relative to ``html_dir``) the page now loads instead of CDN URLs.

    Raises:
        OfflineSiteError: ``html_dir`` has no index.html (run ``asv publish`` first), or an
            unknown CDN URL is loaded.
    """
    index = Path(html_dir) / "index.html"
    if not index.is_file():
        raise OfflineSiteError(f"no index.html in {html_dir}; run `asv publish` first")
    html = index.read_text(encoding="utf-8")
    new = rewrite_index(html)
    missing = [p for p in CDN_FILES.values() if not (Path(vendor_dir) / p).is_file()]
    if missing:
        raise OfflineSiteError(f"vendored files missing in {vendor_dir}: {missing}")
    target = Path(html_dir) / SITE_VENDOR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(vendor_dir, target, ignore=shutil.ignore_patterns("README.md"))
    index.write_text(new, encoding="utf-8")
    return sorted({f"{SITE_VENDOR}/{p}" for u, p in CDN_FILES.items() if u in html})


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m suite.asv_offline", description=__doc__)
    parser.add_argument("html_dir", type=Path, help="asv's html_dir (results/asv/html)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        local = make_offline(args.html_dir)
    except OfflineSiteError as err:
        log.error("error: %s", err)
        return 1
    log.info("%s: %d CDN files now load from %s/", args.html_dir, len(local), SITE_VENDOR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
