"""A real headless Chromium for the playground tests (Debian's ``chromium``, driven by playwright).

Playwright drives the system browser through its executable path; nothing is downloaded
(``playwright install`` is never run). ``scripts/test`` installs the ``chromium`` package when it
is missing and it can (root with apt-get). Without a browser the tests are skipped with the
reason, and fail where ``CI`` is set so CI cannot pass without running them.

Every page records its console errors, uncaught exceptions and failed requests in
:attr:`Browser.errors`; screenshots go to ``REELSERVE_TEST_ARTIFACTS`` (or the directory given).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser as PlaywrightBrowser
    from playwright.sync_api import Page

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Headless, no sandbox (root in a container), and no network of its own beyond the page.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS_ENV = "REELSERVE_TEST_ARTIFACTS"


def chromium_path() -> str | None:
    """The system Chromium (``REELSERVE_CHROMIUM`` overrides), or None."""
    explicit = os.environ.get("REELSERVE_CHROMIUM")
    if explicit:
        return explicit
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the browser tests must run there)", pytrace=False)
    pytest.skip(message)


class Browser:
    """One Chromium; :meth:`page` opens a fresh context (own storage) per test."""

    def __init__(self, browser: PlaywrightBrowser, screenshots: Path) -> None:
        self._browser = browser
        self.screenshots = screenshots
        self.errors: list[str] = []
        self._context = None

    def page(self, url: str, *, expect_errors: bool = False) -> Page:
        """A new page (new context: empty localStorage) at ``url``; errors are recorded unless
        ``expect_errors`` (e.g. the 401 answers a keyed server sends before the key is given)."""
        if self._context is not None:
            self._context.close()
        self.errors = []
        self._context = self._browser.new_context(viewport={"width": 1100, "height": 1400})
        page = self._context.new_page()
        page.set_default_timeout(60_000)
        if not expect_errors:
            # A refused API call is recorded by its response (with the URL); the console's
            # "Failed to load resource" line for it says less, so it is left out.
            page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error" and "Failed to load resource" not in msg.text
                    else None)
            page.on("response", lambda resp: self.errors.append(
                f"HTTP {resp.status} {resp.request.method} {resp.url.split('?', 1)[0]}")
                if resp.status >= 400 else None)
            page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: self.errors.append(
                f"request failed: {req.url}: {req.failure}")
                if not req.url.split("?", 1)[0].endswith((".mp4", ".webm", ".mov")) else None)
        page.goto(url)
        return page

    def wait(self, page: Page, expression: str, timeout: float = 60.0) -> None:
        """Wait until the JavaScript ``expression`` is truthy in ``page``.

        Polls with ``page.evaluate`` (run through the DevTools protocol) because playwright's
        ``wait_for_function`` compiles its predicate with ``eval``, which the page's strict
        Content-Security-Policy forbids, and the tests keep that policy on.
        """
        deadline = time.monotonic() + timeout
        while not page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout:g} s: {expression}")
            time.sleep(0.1)

    def screenshot(self, page: Page, name: str) -> Path:
        """Save a full-page screenshot (a test artifact) and return its path."""
        path = self.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        """Close the open context (the browser is closed by :func:`open_browser`)."""
        if self._context is not None:
            self._context.close()
            self._context = None


@contextlib.contextmanager
def open_browser(default_screenshots: Path) -> Iterator[Browser]:
    """Start the system Chromium headless; skip (or fail on CI) when there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        _unavailable("no Chromium (apt-get install chromium; scripts/test does it as root)")
    screenshots = Path(os.environ.get(ARTIFACTS_ENV) or default_screenshots)
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                              headless=True)
        browser = Browser(chromium, screenshots)
        try:
            yield browser
        finally:
            browser.close()
            chromium.close()
