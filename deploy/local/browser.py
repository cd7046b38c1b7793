"""Debian's chromium and chromium-driver, which the browser end-to-end test
drives: always the distribution's, never a browser or driver downloaded at
run time.

    python -m deploy.local.browser      install if missing, print the paths
"""

from __future__ import annotations

import sys

from deploy.local.fetch import FetchFailed, ensure_debian_package


def ensure_browser() -> tuple[str, str]:
    """The paths of chromium and chromedriver, installing them if missing.
    Chromium keeps its recommended packages: they bring the fonts a page's
    text is drawn with in the screenshots."""
    return (
        ensure_debian_package("chromium", "chromium", recommends=True),
        ensure_debian_package("chromium-driver", "chromedriver"),
    )


if __name__ == "__main__":
    try:
        print("\n".join(ensure_browser()))
    except FetchFailed as error:
        sys.exit(f"error: {error}")
