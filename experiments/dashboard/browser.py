"""Headless Chromium via Playwright, shared by `--screenshot` and the dashboard tests.

We drive Debian's `chromium` (installed by experiments/install_browser.sh) through
`executable_path` because `playwright install` downloads a browser, and our machines have no
network beyond package registries. The flags keep the browser from reaching out on its own
(component updates, sync, QUIC probes) and from needing a GPU or a user namespace sandbox
(containers run as root without one).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = os.environ.get("THINKRL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "run experiments/install_browser.sh (installs Debian's chromium package)"


class BrowserMissing(RuntimeError):
    pass


def check_browser() -> str:
    """Path of the Chromium binary; raises BrowserMissing with the fix if it is absent."""
    if not os.access(CHROMIUM, os.X_OK):
        raise BrowserMissing(f"headless Chromium not found at {CHROMIUM}: {INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401  (the dev extra: checked here, imported where used)
    except ImportError as e:
        raise BrowserMissing("the Python package `playwright` is missing: pip install -e '.[dev]'") from e
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[object]:
    """A launched Playwright Browser using the system Chromium and a throwaway profile."""
    path = check_browser()
    from playwright.sync_api import sync_playwright  # Playwright: the dev extra; only screenshots need it

    with sync_playwright() as pw:
        # launch() starts Chromium with a fresh temporary --user-data-dir of its own (and rejects
        # one passed in args), so a user's real profile is never read or written.
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(url: str, out: Path, *, width: int = 1500, height: int = 1000, timeout_s: float = 60) -> None:
    """Open `url`, wait until every panel has drawn, and save a full-page PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=timeout_s * 1000)
        page.wait_for_timeout(300)  # let plotly finish its transition frame
        page.screenshot(path=str(out), full_page=True)
        if errors:
            raise RuntimeError("the page raised errors: " + "; ".join(errors))
