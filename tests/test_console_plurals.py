"""The console counts in words that agree with the number (issue #19.8): the erase page of a
user in one company says "memberships in 1 company", not "1 companies"."""

from __future__ import annotations

import re

import httpx

from tests import processes
from tests.admin_support import send
from tests.console_support import sign_in_http
from tests.segment_payloads import MakeEnv, group, identify, new_id


async def test_the_erase_page_counts_in_the_singular_and_the_plural(
    server: processes.Process, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    one, two = new_id("one"), new_id("two")
    await send(http, env.webhook_path, identify(one, {"plan": "pro"}), group(one, "acme", {}))
    await send(
        http,
        env.webhook_path,
        identify(two, {"plan": "pro", "seats": 3}),
        group(two, "acme", {}),
        group(two, "globex", {}),
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await sign_in_http(client)
        pages = {}
        for user in (one, two):
            page = await client.get(f"/admin/environments/{env.id}/user/erase", params={"id": user})
            assert page.status_code == 200, page.text
            pages[user] = re.sub(r"\s+", " ", page.text)
    assert "its 1 trait, 0 anonymous ids, memberships in 1 company," in pages[one], pages[one]
    assert "its 2 traits, 0 anonymous ids, memberships in 2 companies," in pages[two]
