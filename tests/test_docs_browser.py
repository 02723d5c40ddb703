"""/docs in a real browser: Debian's Chromium, driven by Playwright with the system browser.

Checking the page's HTML is not enough: Swagger UI 4 served that HTML too and then showed
"Unable to render this definition" for the OpenAPI 3.1 document. Here the browser loads the
page from the real server, an operation is expanded, and its schema must be on screen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.processes import Process

pytestmark = pytest.mark.slow


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium() as browser:
        yield await browser.new_page(viewport={"width": 1280, "height": 1600})


async def test_docs_page_renders_the_document_and_an_operation_schema(
    page: Any, server: Process, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    refused: list[str] = []  # what the page's Content-Security-Policy blocked
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    answer = await page.goto(f"{server.url}/docs")
    headers = await answer.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    try:
        # Either the operations are drawn or Swagger UI says why not; both end the wait.
        await page.wait_for_selector(".opblock, .errors-wrapper", timeout=30_000)
        assert "Unable to render" not in await page.inner_text("body")
        operation = page.locator(
            '.opblock-get:has(.opblock-summary-path[data-path="/api/environments/{env_id}"])'
        )
        await operation.locator(".opblock-summary").click()
        await operation.get_by_role("tab", name="Schema").first.click()
        # The 200 answer's model, drawn from the document's components: a title, property
        # names and their types.
        schema = operation.locator(".model-box").first
        await schema.get_by_text("webhook_key_hint").wait_for(timeout=10_000)
        model = await schema.inner_text()
    finally:
        await page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    assert "EnvironmentOut" in model
    assert "stream_enabled" in model and "boolean" in model and "date-time" in model
    assert errors == [], "the page threw"
    assert refused == [], "the policy blocked part of the page"
