"""Identity you can trust (issue #25), end to end over HTTP against the real server: blocked
ids identify no one, links and merges are guarded and logged, a user's anonymous ids are
limited, and an erasure leaves nothing of the person in the merge log."""

from __future__ import annotations

from typing import Any

import httpx

from integration.store.db import SessionMaker
from tests import processes
from tests import segment_payloads as sp
from tests.console_support import sign_in_http
from tests.segment_payloads import Env, MakeEnv, at, identify, new_id, track


async def post(http: httpx.AsyncClient, env: Env, body: Any) -> dict[str, Any]:
    response = await http.post(env.webhook_path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def get(admin: httpx.AsyncClient, env: Env, path: str) -> Any:
    response = await admin.get(f"/api/environments/{env.id}{path}")
    assert response.status_code == 200, response.text
    return response.json()


# Blocked ids


async def test_placeholder_user_ids_identify_no_one_and_are_counted(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    anon_a, anon_b = new_id("anon"), new_id("anon")
    messages = [
        identify("0", {"email": "a@acme.test"}, anonymousId=anon_a, when=at(0)),
        identify("undefined", {"email": "b@acme.test"}, anonymousId=anon_b, when=at(1)),
        track(" NULL ", "Clicked", anonymousId=anon_b, when=at(2)),
        sp.message("track", event="Zero", userId=0, anonymousId=anon_a, when=at(3)),
    ]
    assert (await post(http, env, messages))["stored"] == 4

    # Nobody was identified: no profile, no link, and the two browsers stay apart.
    assert await sp.counts(sessions, env.id) | {"events": 0} == sp.NOTHING
    for m in messages:
        row = await sp.event(sessions, env.id, m["messageId"])
        assert row.user_id is None and row.anonymous_id in (anon_a, anon_b)
    # The stored message reads as it was sent.
    [first] = (await get(admin, env, f"/events?anonymous_id={anon_a}&type=identify"))["items"]
    assert (first["user_id"], first["extra"]["userId"]) == (None, "0")
    book = await get(admin, env, "/ledger?direction=inbound")
    assert (book["inbound"]["stored"], book["inbound"]["blocked_ids"]) == (4, 4)
    # A redelivery counts as a duplicate, not as blocked again.
    assert (await post(http, env, messages))["duplicates"] == 4
    assert (await get(admin, env, "/ledger?direction=inbound"))["inbound"]["blocked_ids"] == 4


async def test_an_environment_sets_its_own_blocked_ids(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    shown = await get(admin, env, "")
    assert shown["blocked_ids_default"] and "undefined" in shown["blocked_ids"]
    changed = await admin.patch(
        f"/api/environments/{env.id}", json={"blocked_ids": ["Guest", "test-user"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["blocked_ids"] == ["guest", "test-user"]
    assert not changed.json()["blocked_ids_default"]
    bad = await admin.patch(f"/api/environments/{env.id}", json={"blocked_ids": "guest"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_field"

    anon = new_id("anon")
    await post(http, env, identify("GUEST", {"plan": "free"}, anonymousId=anon, when=at(0)))
    await post(http, env, identify("0", {"plan": "pro"}, when=at(1)))
    assert await sp.user(sessions, env.id, "GUEST") is None
    assert await sp.anonymous_ids(sessions, env.id) == {}
    # "0" is no longer on this environment's list: it is a user like any other.
    assert await sp.user(sessions, env.id, "0") is not None

    reset = await admin.patch(f"/api/environments/{env.id}", json={"blocked_ids": None})
    assert reset.json()["blocked_ids_default"]


async def test_the_live_view_says_why_a_message_was_stored_as_anonymous(
    server: processes.Process, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    await post(http, env, track("undefined", "Clicked", anonymousId=new_id("anon")))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as console:
        await sign_in_http(console)
        rows = (await console.get(f"/admin/environments/{env.id}/live/rows")).text
    assert "userId &#39;undefined&#39; is a blocked id: stored as anonymous" in rows
