"""Signing in to the console, from a browser (Playwright) or from httpx. Not a test module."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def sign_in_browser(page: Any, base: str) -> None:
    await page.goto(f"{base}/admin/")
    assert page.url == f"{base}/admin/login", "an anonymous visit goes to the sign-in page"
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(f"{base}/admin/")


async def sign_in_http(client: httpx.AsyncClient) -> str:
    """Signs the client in (its cookie jar holds the session); the session's CSRF token."""
    form = await client.get("/admin/login")
    assert form.status_code == 200, form.text
    answer = await client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf_of(form.text)}
    )
    assert answer.status_code == 303, answer.text
    home = await client.get("/admin/")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)
