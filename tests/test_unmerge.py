"""Unmerge (issue #25), end to end over HTTP against the real server: a merge is taken back
exactly as its log says it moved things, once, whatever arrived since, and under concurrent
ingest of both ids."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select

from integration.store.db import SessionMaker
from integration.store.models import IdentityMove
from tests import segment_payloads as sp
from tests.console_support import sign_in_http
from tests.processes import Process
from tests.segment_payloads import Env, MakeEnv, at, identify, new_id, track
from tests.test_identity_conflicts import done, listed, two_identified_users
from tests.test_inbound_identity import get, post


async def unmerge(admin: httpx.AsyncClient, env: Env, user: str, merged: str) -> httpx.Response:
    return await admin.post(
        f"/api/environments/{env.id}/users/{user}/unmerge", json={"merged_id": merged}
    )


async def unmerged(admin: httpx.AsyncClient, env: Env, user: str, merged: str) -> dict[str, Any]:
    answer = await unmerge(admin, env, user, merged)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def owners(sessions: SessionMaker, env: Env) -> dict[str, str | None]:
    """Each stored event's user, by messageId."""
    return {r.message_id: r.user_id for r in await sp.events(sessions, env.id)}


async def traits(sessions: SessionMaker, env: Env, user: str) -> dict[str, Any] | None:
    found = await sp.user(sessions, env.id, user)
    return None if found is None else dict(found.traits)


async def moves(sessions: SessionMaker, env: Env) -> int:
    async with sessions() as session:
        stmt = select(func.count()).where(IdentityMove.environment_id == env.id)
        return int(await session.scalar(stmt.select_from(IdentityMove)) or 0)


async def test_an_applied_identified_merge_unmerges_back_to_both_profiles(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, bob = await two_identified_users(http, env)
    bob_device = new_id("bob-phone")
    await post(http, env, track(bob, "Opened app", anonymousId=bob_device, when=at(5.5)))
    before = await owners(sessions, env)
    bob_profile = await sp.user(sessions, env.id, bob)
    assert bob_profile is not None
    await post(http, env, sp.alias(ada, bob, when=at(6)))
    [conflict] = await listed(admin, env)
    await done(admin, env, conflict["id"], "apply")
    assert await traits(sessions, env, bob) is None
    assert await traits(sessions, env, ada) == {"plan": "free", "role": "admin", "seats": 3}

    answer = await unmerged(admin, env, ada, bob)

    assert answer["already_undone"] is False and answer["merged_id"] == bob
    assert answer["restored"] == {"events": 4, "anonymous_ids": 1, "traits": 2, "memberships": 1}
    # Every event is back where it was (the alias stays Ada's, as sent).
    after = await owners(sessions, env)
    assert {m: after[m] for m in before} == before
    # Both profiles as they were, and each company with its own member again.
    assert await traits(sessions, env, ada) == {"plan": "pro", "role": "admin"}
    restored = await sp.user(sessions, env.id, bob)
    assert restored is not None and restored.traits == bob_profile.traits
    assert restored.trait_times == bob_profile.trait_times
    assert restored.first_seen_at == bob_profile.first_seen_at
    assert await sp.memberships(sessions, env.id) == {(ada, "acme"), (bob, "globex")}
    assert await sp.anonymous_ids(sessions, env.id) == {bob_device: bob}
    # The identity page says so.
    identity = await get(admin, env, f"/users/{ada}/identity")
    [merge] = [m for m in identity["merges_in"] if m["kind"] == "merge"]
    assert merge["id"] == answer["merge_id"] and merge["undone_at"] == answer["undone_at"]
    assert merge["undone_by"] == "admin API (ADMIN_TOKEN)"

    # Again: the same answer, nothing moves.
    again = await unmerged(admin, env, ada, bob)
    assert again == {**answer, "already_undone": True}
    assert await owners(sessions, env) == after


async def test_a_trait_set_after_the_merge_stays_and_the_others_go_back(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    await post(http, env, sp.alias(ada, bob, when=at(6)))
    assert await traits(sessions, env, ada) == {"plan": "free", "role": "admin", "seats": 3}
    # Ada's own messages since: one sets the plan anew, one sets a trait Bob never had; one
    # older than Bob's seats (which it lost to, merged) names seats too.
    await post(
        http,
        env,
        [
            identify(ada, {"plan": "team"}, when=at(7)),
            identify(ada, {"city": "Oslo"}, when=at(8)),
            identify(ada, {"seats": 9}, when=at(2.5)),
        ],
    )
    assert await traits(sessions, env, ada) == {
        "plan": "team",
        "role": "admin",
        "seats": 3,
        "city": "Oslo",
    }

    await unmerged(admin, env, ada, bob)

    # plan and city were set by later messages: they stay. seats came from Bob (its 9 was older
    # and lost to it): it goes back to the newest of Ada's own messages.
    assert await traits(sessions, env, ada) == {
        "plan": "team",
        "role": "admin",
        "seats": 9,
        "city": "Oslo",
    }
    assert await traits(sessions, env, bob) == {"plan": "free", "seats": 3}


async def test_an_anonymous_alias_unmerges_with_the_events_that_came_through_it_since(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, browser = new_id("ada"), new_id("browser")
    earlier = sp.page(None, "Pricing", anonymousId=browser, when=at(0))
    await post(http, env, [earlier, identify(ada, {"plan": "pro"}, when=at(1))])
    await post(http, env, sp.alias(ada, browser, when=at(2)))
    since = sp.page(None, "Docs", anonymousId=browser, when=at(3))
    named = track(ada, "Searched", anonymousId=browser, when=at(4))
    await post(http, env, [since, named])
    assert (await owners(sessions, env))[since["messageId"]] == ada

    # Named as Segment's alias names it.
    response = await admin.post(
        f"/api/environments/{env.id}/users/{ada}/unmerge", json={"previousId": browser}
    )
    assert response.status_code == 200, response.text
    answer = response.json()

    assert answer["restored"]["events"] == 2 and answer["merged_id"] == browser
    after = await owners(sessions, env)
    # The browser's anonymous pages are anonymous again; the track that named Ada stays hers.
    assert (after[earlier["messageId"]], after[since["messageId"]]) == (None, None)
    assert after[named["messageId"]] == ada
    assert await sp.anonymous_ids(sessions, env.id) == {}
    assert await traits(sessions, env, ada) == {"plan": "pro"}


async def test_unmerge_refuses_what_it_cannot_take_back_and_goes_in_order(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    carl = new_id("carl")
    await post(http, env, identify(carl, {"plan": "enterprise"}, when=at(6)))
    await post(http, env, sp.alias(ada, bob, when=at(7)))
    await post(http, env, sp.alias(carl, ada, when=at(8)))
    assert await traits(sessions, env, ada) is None

    missing = await unmerge(admin, env, ada, new_id("nobody"))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    empty = await admin.post(f"/api/environments/{env.id}/users/{ada}/unmerge", json={})
    assert empty.status_code == 400
    # Ada went on into Carl: Bob's events are Carl's now, so Ada's merge goes back first.
    blocked = await unmerge(admin, env, ada, bob)
    assert blocked.status_code == 409 and blocked.json()["error"] == "merged_since"
    assert carl in blocked.json()["detail"]

    await unmerged(admin, env, carl, ada)
    await unmerged(admin, env, ada, bob)
    assert await traits(sessions, env, ada) == {"plan": "pro", "role": "admin"}
    assert await traits(sessions, env, bob) == {"plan": "free", "seats": 3}
    assert await traits(sessions, env, carl) == {"plan": "enterprise"}
    assert await sp.memberships(sessions, env.id) == {(ada, "acme"), (bob, "globex")}


async def test_a_redelivery_after_an_unmerge_merges_nothing_again(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = new_id("ada"), new_id("bob")
    batch = [
        identify(ada, {"plan": "pro"}, when=at(0)),
        identify(bob, {"plan": "free"}, when=at(1)),
        track(bob, "Paid", when=at(2)),
        sp.alias(ada, bob, when=at(3)),
    ]
    await post(http, env, batch)
    await unmerged(admin, env, ada, bob)
    settled = await owners(sessions, env)

    answer = await post(http, env, batch)

    assert answer["duplicates"] == len(batch)
    assert await owners(sessions, env) == settled
    assert await traits(sessions, env, bob) == {"plan": "free"}
    identity = await get(admin, env, f"/users/{ada}/identity")
    assert [m["undone_at"] is not None for m in identity["merges_in"]] == [True]


async def test_an_unmerge_under_concurrent_ingest_of_both_ids_puts_each_event_right(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    ada_device, bob_device = new_id("ada-phone"), new_id("bob-phone")
    await post(http, env, identify(ada, {}, anonymousId=ada_device, when=at(5.1)))
    await post(http, env, identify(bob, {}, anonymousId=bob_device, when=at(5.2)))
    await post(http, env, sp.alias(ada, bob, when=at(6)))

    async def stream(device: str, named: str) -> list[tuple[str, str | None]]:
        """Anonymous events of the device and named events of its user, one request each;
        each with the user it must end up under."""
        sent = []
        for i in range(12):
            anonymous = sp.page(None, f"Page {i}", anonymousId=device, when=at(10 + i))
            own = track(named, f"Event {i}", when=at(10 + i))
            await post(http, env, [anonymous, own])
            sent += [(anonymous["messageId"], device), (own["messageId"], named)]
        return sent

    ada_sent, bob_sent, answer = await asyncio.gather(
        stream(ada_device, ada),
        stream(bob_device, bob),
        _unmerge_midway(admin, env, ada, bob),
    )

    assert answer["already_undone"] is False
    after = await owners(sessions, env)
    # Whichever side of the unmerge each arrived on: a device's events are its owner's.
    devices = {ada_device: ada, bob_device: bob, ada: ada, bob: bob}
    wrong = {m: after[m] for m, who in ada_sent + bob_sent if after[m] != devices[who]}
    assert wrong == {}
    assert await sp.anonymous_ids(sessions, env.id) == {ada_device: ada, bob_device: bob}
    assert await traits(sessions, env, bob) == {"plan": "free", "seats": 3}


async def _unmerge_midway(
    admin: httpx.AsyncClient, env: Env, user: str, merged: str
) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return await unmerged(admin, env, user, merged)


async def test_erasing_the_user_leaves_nothing_of_the_merge_behind(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    await post(http, env, sp.alias(ada, bob, when=at(6)))
    assert await moves(sessions, env) > 0

    erased = await admin.delete(f"/api/environments/{env.id}/users/{ada}")

    assert erased.status_code == 200, erased.text
    assert await moves(sessions, env) == 0
    gone = await unmerge(admin, env, ada, bob)
    assert gone.status_code == 404


async def test_a_user_with_more_anonymous_ids_than_a_page_shows_counts_them_all(
    server: Process, http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment(max_anonymous_ids_per_user=2000)
    ada = new_id("ada")
    devices = sorted(f"device-{i:05d}" for i in range(1001))
    await post(http, env, [identify(ada, {}, anonymousId=d, when=at(0)) for d in devices])

    identity = await get(admin, env, f"/users/{ada}/identity")
    detail = await get(admin, env, f"/users/{ada}")

    for page in (identity, detail):
        assert page["anonymous_ids"] == devices[:1000]
        assert page["anonymous_ids_total"] == 1001
    # The console's page names twenty and counts the rest, in the profile and the Identity card.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as console:
        await sign_in_http(console)
        html = (await console.get(f"/admin/environments/{env.id}/user", params={"id": ada})).text
    assert html.count("and 981 more") == 2
    assert devices[19] in html and devices[20] not in html


async def test_placeholder_ids_merge_no_one_either_way_of_an_alias(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    await post(
        http,
        env,
        [
            sp.alias("0", bob, when=at(6)),
            sp.alias("undefined", ada, when=at(7)),
            sp.alias(ada, "0", when=at(8)),
            sp.alias(bob, "undefined", when=at(9)),
        ],
    )

    assert await traits(sessions, env, ada) == {"plan": "pro", "role": "admin"}
    assert await traits(sessions, env, bob) == {"plan": "free", "seats": 3}
    assert await sp.user(sessions, env.id, "0") is None
    assert await sp.anonymous_ids(sessions, env.id) == {}
    assert await moves(sessions, env) == 0


async def test_a_conflicting_alias_amid_concurrent_ingest_of_both_ids_is_recorded_once(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, bob = await two_identified_users(http, env)
    merge = sp.alias(ada, bob, when=at(6))
    own = [
        m
        for i in range(8)
        for m in (
            identify(ada, {"visits": i}, when=at(10 + i)),
            track(bob, f"Event {i}", when=at(10 + i)),
        )
    ]
    await asyncio.gather(post(http, env, merge), *(post(http, env, m) for m in own))
    # Segment sends it all again.
    await asyncio.gather(post(http, env, merge), *(post(http, env, m) for m in own))

    [conflict] = await listed(admin, env)
    assert (conflict["kind"], conflict["from_id"], conflict["user_id"]) == (
        "identified_merge",
        bob,
        ada,
    )
    assert await traits(sessions, env, ada) == {"plan": "pro", "role": "admin", "visits": 7}
    assert await traits(sessions, env, bob) == {"plan": "free", "seats": 3}
    after = await owners(sessions, env)
    assert {after[m["messageId"]] for m in own if m["type"] == "track"} == {bob}
    assert await moves(sessions, env) == 0
