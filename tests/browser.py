"""Debian's Chromium driven by Playwright (the system browser: no browser download), for the
tests that look at pages as a person would. Not a test module itself."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What a browser in a sandboxed CI container needs: no GPU, no sandbox (root), and none of
# Chromium's own calls home (there is no network but loopback here).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def need_chromium() -> None:
    """`make test` installs Chromium with apt; where it could not, say so instead of failing.
    CI's machine has apt, so there a missing browser is a failure, not a skip."""
    if Path(CHROMIUM).exists():
        return
    reason = "no Chromium at /usr/bin/chromium (apt-get install -y chromium; `make test` tries)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched browser, closed afterwards (skips, saying why, where there is none)."""
    need_chromium()
    playwright = pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]'")
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
