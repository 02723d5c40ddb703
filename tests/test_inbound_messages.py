"""Segment's Webhooks destination posts real messages to the real server; what lands in Postgres.

Every test makes its own environment, posts over HTTP, and reads the rows back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from integration.store.db import SessionMaker
from tests import segment_payloads as sp
from tests.segment_payloads import Env, MakeEnv, at, identify, iso, new_id, track


async def post(http: httpx.AsyncClient, env: Env, body: Any) -> dict[str, Any]:
    """Post and expect 200; returns the JSON answer."""
    response = await http.post(env.webhook_path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ok(stored: int, duplicates: int = 0) -> dict[str, Any]:
    return {"stored": stored, "duplicates": duplicates, "rejected": []}


ADDRESS = {"street": "6th St", "city": "San Francisco", "state": "CA", "postalCode": "94103"}


# identify


async def test_identify_creates_user_with_nested_traits(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anonymous_id = new_id("user"), new_id("anon")
    traits = {
        "name": "Ada Lovelace",
        "email": "ada@acme.test",
        "plan": "enterprise",
        "logins": 5,
        "address": ADDRESS,
        "roles": ["admin", "billing"],
        "createdAt": "2024-01-02T03:04:05.000Z",
    }
    msg = identify(user_id, traits, anonymousId=anonymous_id, when=at(0))

    assert await post(http, env, msg) == ok(1)

    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert user.traits == traits
    assert user.first_seen_at == user.last_seen_at == at(0)
    stored = await sp.event(sessions, env.id, msg["messageId"])
    assert (stored.type, stored.user_id, stored.anonymous_id) == ("identify", user_id, anonymous_id)
    assert stored.traits == traits
    assert stored.context == msg["context"]
    assert stored.timestamp == at(0)
    assert stored.sent_at is not None and iso(stored.sent_at) == msg["sentAt"]
    assert stored.received_at is not None and iso(stored.received_at) == msg["receivedAt"]
    assert stored.extra == {"channel": "client", "version": 2}
    assert await sp.anonymous_ids(sessions, env.id) == {anonymous_id: user_id}


async def test_second_identify_adds_and_updates_traits_without_wiping(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    first = {"name": "Ada", "email": "ada@acme.test", "plan": "free", "address": ADDRESS}
    await post(http, env, identify(user_id, first, when=at(0)))
    await post(http, env, identify(user_id, {"plan": "pro", "seats": 12}, when=at(5)))

    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert user.traits == {
        "name": "Ada",
        "email": "ada@acme.test",
        "plan": "pro",
        "address": ADDRESS,
        "seats": 12,
    }
    assert (user.first_seen_at, user.last_seen_at) == (at(0), at(5))


async def test_older_identify_does_not_overwrite_newer_traits_but_adds_new_keys(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    # Segment retried the older message: it arrives after the newer one.
    await post(http, env, identify(user_id, {"plan": "pro", "seats": 12}, when=at(10)))
    await post(
        http, env, identify(user_id, {"plan": "free", "seats": 1, "title": "CTO"}, when=at(1))
    )

    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert user.traits == {"plan": "pro", "seats": 12, "title": "CTO"}
    assert (user.first_seen_at, user.last_seen_at) == (at(1), at(10))

    # Within one batch too: the newest message wins whatever its place in the array.
    other = new_id("user")
    batch = [
        identify(other, {"plan": "pro"}, when=at(20)),
        identify(other, {"plan": "free", "title": "CEO"}, when=at(19)),
    ]
    assert await post(http, env, batch) == ok(2)
    user = await sp.user(sessions, env.id, other)
    assert user is not None
    assert user.traits == {"plan": "pro", "title": "CEO"}


# track, page, screen


async def test_track_page_screen_are_stored_as_events(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    properties = {
        "order_id": "50314b8e9bcf000000000000",
        "total": 27.5,
        "currency": "USD",
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "price": 19, "qty": 1},
            {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "price": 8.5, "qty": 1},
        ],
    }
    tracked = track(user_id, "Order Completed", properties, when=at(3))
    paged = sp.page(user_id, "Pricing", when=at(1))
    screened = sp.screen(user_id, "Dashboard", when=at(7))

    assert await post(http, env, tracked) == ok(1)
    assert await post(http, env, [paged, screened]) == ok(2)

    rows = {e.message_id: e for e in await sp.events(sessions, env.id)}
    assert len(rows) == 3
    for msg, name in ((tracked, "Order Completed"), (paged, "Pricing"), (screened, "Dashboard")):
        row = rows[msg["messageId"]]
        assert (row.type, row.name, row.user_id) == (msg["type"], name, user_id)
        assert row.properties == msg["properties"]
        assert row.context == msg["context"]
        assert iso(row.timestamp) == msg["timestamp"]
        assert row.sent_at is not None and iso(row.sent_at) == msg["sentAt"]
        assert row.received_at is not None and iso(row.received_at) == msg["receivedAt"]
        assert row.traits is None and row.group_id is None
    screen_context = rows[screened["messageId"]].context
    assert screen_context is not None
    assert screen_context["os"] == {"name": "iOS", "version": "17.4.1"}

    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert user.traits == {}
    assert (user.first_seen_at, user.last_seen_at) == (at(1), at(7))

    # A later event moves last_seen; an older straggler moves first_seen back.
    await post(http, env, track(user_id, "Report Exported", when=at(30)))
    await post(http, env, track(user_id, "Signed Up", when=at(-60)))
    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert (user.first_seen_at, user.last_seen_at) == (at(-60), at(30))


async def test_message_without_timestamp_falls_back_to_original_timestamp(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    msg = track(new_id("user"), "Clicked", timestamp=None, originalTimestamp=iso(at(2)))
    await post(http, env, msg)
    assert (await sp.event(sessions, env.id, msg["messageId"])).timestamp == at(2)


async def test_anonymous_track_is_attached_to_the_user_once_identified(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anonymous_id = new_id("user"), new_id("anon")
    before = track(None, "Pricing Viewed", {"plan": "pro"}, anonymousId=anonymous_id, when=at(0))
    assert await post(http, env, before) == ok(1)

    row = await sp.event(sessions, env.id, before["messageId"])
    assert (row.user_id, row.anonymous_id) == (None, anonymous_id)
    assert await sp.user(sessions, env.id, user_id) is None
    assert await sp.counts(sessions, env.id) == {**sp.NOTHING, "events": 1}

    await post(http, env, identify(user_id, {"email": "x@acme.test"}, anonymousId=anonymous_id))
    row = await sp.event(sessions, env.id, before["messageId"])
    assert (row.user_id, row.anonymous_id) == (user_id, anonymous_id)
    assert await sp.anonymous_ids(sessions, env.id) == {anonymous_id: user_id}

    # Once linked, a later anonymous-only event lands on the user straight away.
    after = track(None, "Docs Viewed", anonymousId=anonymous_id, when=at(9))
    await post(http, env, after)
    assert (await sp.event(sessions, env.id, after["messageId"])).user_id == user_id


# group and companies


async def test_group_upserts_company_with_merged_traits_and_membership(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, other_user, group_id = new_id("user"), new_id("user"), new_id("org")
    traits = {
        "name": "Initech",
        "industry": "Technology",
        "employees": 329,
        "plan": "enterprise",
        "address": ADDRESS,
        "tags": ["beta", "priority"],
    }
    msg = sp.group(user_id, group_id, traits, when=at(0))
    assert await post(http, env, msg) == ok(1)
    await post(http, env, sp.group(other_user, group_id, {"employees": 340}, when=at(4)))
    # An older update of a trait loses; its new key is kept.
    await post(http, env, sp.group(user_id, group_id, {"plan": "free", "arr": 1e6}, when=at(-9)))

    company = await sp.company(sessions, env.id, group_id)
    assert company is not None
    assert company.traits == {**traits, "employees": 340, "arr": 1e6}
    assert (company.first_seen_at, company.last_seen_at) == (at(-9), at(4))
    assert await sp.memberships(sessions, env.id) == {(user_id, group_id), (other_user, group_id)}
    row = await sp.event(sessions, env.id, msg["messageId"])
    assert (row.type, row.group_id, row.user_id, row.traits) == ("group", group_id, user_id, traits)
    # Group traits are the company's, not the user's.
    user = await sp.user(sessions, env.id, user_id)
    assert user is not None and user.traits == {}


async def test_default_company_property_attaches_event_to_company(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, group_id = new_id("user"), new_id("org")
    msg = track(user_id, "Report Created", {"company_id": group_id, "format": "pdf"}, when=at(2))
    assert await post(http, env, msg) == ok(1)

    assert (await sp.event(sessions, env.id, msg["messageId"])).group_id == group_id
    company = await sp.company(sessions, env.id, group_id)
    assert company is not None
    assert company.traits == {}
    assert company.last_seen_at == at(2)
    assert await sp.memberships(sessions, env.id) == {(user_id, group_id)}


async def test_custom_company_property(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(company_property="account_id")
    user_id, account, ignored = new_id("user"), new_id("acct"), new_id("org")
    mapped = sp.page(user_id, "Billing")
    mapped["properties"]["account_id"] = account
    unmapped = track(user_id, "Seat Added", {"company_id": ignored})
    assert await post(http, env, [mapped, unmapped]) == ok(2)

    assert (await sp.event(sessions, env.id, mapped["messageId"])).group_id == account
    assert (await sp.event(sessions, env.id, unmapped["messageId"])).group_id is None
    assert await sp.company(sessions, env.id, account) is not None
    assert await sp.company(sessions, env.id, ignored) is None
    assert await sp.memberships(sessions, env.id) == {(user_id, account)}


async def test_context_group_id_attaches_event_to_company(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, from_context, from_property = new_id("user"), new_id("org"), new_id("org")
    by_context = track(user_id, "Dashboard Viewed")
    by_context["context"]["groupId"] = from_context
    screened = sp.screen(user_id, "Home")
    screened["context"]["groupId"] = from_context
    # The environment's property wins over context.groupId.
    both = track(user_id, "Invoice Paid", {"company_id": from_property})
    both["context"]["groupId"] = from_context
    assert await post(http, env, [by_context, screened, both]) == ok(3)

    assert (await sp.event(sessions, env.id, by_context["messageId"])).group_id == from_context
    assert (await sp.event(sessions, env.id, screened["messageId"])).group_id == from_context
    assert (await sp.event(sessions, env.id, both["messageId"])).group_id == from_property
    assert await sp.memberships(sessions, env.id) == {
        (user_id, from_context),
        (user_id, from_property),
    }


async def test_numeric_company_id(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    msg = track(user_id, "Project Archived", {"company_id": 4242})
    grouped = sp.group(user_id, 777, {"name": "Numbers Inc"})
    assert await post(http, env, [msg, grouped]) == ok(2)

    assert (await sp.event(sessions, env.id, msg["messageId"])).group_id == "4242"
    assert await sp.company(sessions, env.id, "4242") is not None
    numbers = await sp.company(sessions, env.id, "777")
    assert numbers is not None and numbers.traits == {"name": "Numbers Inc"}
    assert await sp.memberships(sessions, env.id) == {(user_id, "4242"), (user_id, "777")}


async def test_anonymous_company_events_give_the_identified_user_a_membership(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anonymous_id = new_id("user"), new_id("anon")
    early, late = new_id("org"), new_id("org")
    await post(
        http, env, track(None, "Trial Started", {"company_id": early}, anonymousId=anonymous_id)
    )
    assert await sp.memberships(sessions, env.id) == set()

    await post(http, env, identify(user_id, {"name": "Ada"}, anonymousId=anonymous_id))
    assert await sp.memberships(sessions, env.id) == {(user_id, early)}

    # After the link, an anonymous-only event of another company belongs to the same user.
    msg = track(None, "Seat Added", {"company_id": late}, anonymousId=anonymous_id)
    await post(http, env, msg)
    assert (await sp.event(sessions, env.id, msg["messageId"])).user_id == user_id
    assert await sp.memberships(sessions, env.id) == {(user_id, early), (user_id, late)}


# alias


async def test_alias_from_earlier_user_id_moves_events_traits_and_links(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    # Both users are identified: merged only where the environment allows it (else a conflict,
    # tests/test_inbound_identity.py).
    env = await make_environment(allow_identified_merges=True)
    old, new, org = new_id("old-user"), new_id("user"), new_id("org")
    old_identify = identify(old, {"name": "Ada", "plan": "free", "source": "ads"}, when=at(0))
    old_track = track(old, "Signed Up", {"company_id": org}, when=at(1))
    await post(http, env, [old_identify, old_track])
    await post(http, env, identify(new, {"plan": "pro", "email": "ada@acme.test"}, when=at(5)))

    msg = sp.alias(new, old, when=at(6))
    assert await post(http, env, msg) == ok(1)

    assert await sp.user(sessions, env.id, old) is None
    user = await sp.user(sessions, env.id, new)
    assert user is not None
    assert user.traits == {"name": "Ada", "plan": "pro", "source": "ads", "email": "ada@acme.test"}
    assert (user.first_seen_at, user.last_seen_at) == (at(0), at(6))
    for message_id in (old_identify["messageId"], old_track["messageId"]):
        assert (await sp.event(sessions, env.id, message_id)).user_id == new
    assert await sp.anonymous_ids(sessions, env.id) == {old: new}
    assert await sp.memberships(sessions, env.id) == {(new, org)}
    row = await sp.event(sessions, env.id, msg["messageId"])
    assert (row.type, row.user_id) == ("alias", new)
    assert row.extra is not None and row.extra["previousId"] == old


async def test_alias_from_anonymous_id_attaches_anonymous_events(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anonymous_id = new_id("user"), new_id("anon")
    browsing = [
        sp.page(None, "Home", anonymousId=anonymous_id, when=at(0)),
        track(None, "CTA Clicked", anonymousId=anonymous_id, when=at(1)),
    ]
    await post(http, env, browsing)
    await post(http, env, sp.alias(user_id, anonymous_id, when=at(2)))

    rows = await sp.events(sessions, env.id)
    assert {r.user_id for r in rows} == {user_id}
    assert await sp.anonymous_ids(sessions, env.id) == {anonymous_id: user_id}
    assert await sp.user(sessions, env.id, user_id) is not None


# unknown types, duplicates, derived ids


async def test_unknown_type_is_stored_raw_and_acknowledged(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    msg = sp.message(
        "experiment_viewed",
        userId=new_id("user"),
        experiment={"id": "exp_42", "variant": "B", "weights": [0.5, 0.5]},
    )
    assert await post(http, env, msg) == ok(1)

    row = await sp.event(sessions, env.id, msg["messageId"])
    assert row.type == "experiment_viewed"
    assert row.extra == msg
    assert row.user_id == msg["userId"]
    # Acknowledged again without change when Segment redelivers it.
    assert await post(http, env, msg) == ok(0, 1)


async def test_redelivered_message_is_acknowledged_and_changes_nothing(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    first = identify(user_id, {"plan": "free", "name": "Ada"}, when=at(0))
    assert await post(http, env, first) == ok(1)

    # Same messageId, different (and newer) content: a redelivery, not a new message.
    again = identify(user_id, {"plan": "pro"}, messageId=first["messageId"], when=at(9))
    assert await post(http, env, again) == ok(0, 1)
    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    assert user.traits == {"plan": "free", "name": "Ada"}
    assert user.last_seen_at == at(0)
    assert await sp.counts(sessions, env.id) == {**sp.NOTHING, "events": 1, "users": 1}

    # Within one batch the second copy is a duplicate too.
    msg = track(user_id, "Clicked")
    assert await post(http, env, [msg, msg]) == ok(1, 1)
    assert len(await sp.events(sessions, env.id)) == 2


async def test_message_without_message_id_gets_a_derived_one_that_dedupes(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    msg = track(user_id, "Clicked", {"button": "Buy"}, messageId=None)
    assert await post(http, env, msg) == ok(1)
    assert await post(http, env, msg) == ok(0, 1)
    different = track(user_id, "Clicked", {"button": "Cancel"}, messageId=None)
    assert await post(http, env, different) == ok(1)

    rows = await sp.events(sessions, env.id)
    assert len(rows) == 2
    assert all(r.message_id.startswith("derived-") for r in rows)
    assert rows[0].message_id != rows[1].message_id


# batches


async def test_batch_stores_valid_messages_and_lists_rejected_ones(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    good_identify = identify(user_id, {"name": "Ada"})
    no_event = track(user_id, "", messageId="bad-track-1")
    good_track = track(user_id, "Clicked")
    no_group = sp.group(user_id, None, {})
    response = await http.post(
        env.webhook_path, json=[good_identify, no_event, good_track, "not a message", no_group]
    )

    assert response.status_code == 200
    answer = response.json()
    assert (answer["stored"], answer["duplicates"]) == (2, 0)
    rejected = answer["rejected"]
    assert [(r["index"], r["error"]) for r in rejected] == [
        (1, "missing_event"),
        (3, "invalid_message"),
        (4, "missing_group_id"),
    ]
    assert rejected[0]["messageId"] == "bad-track-1"
    assert all(isinstance(r["detail"], str) and r["detail"] for r in rejected)
    assert "event" in rejected[0]["detail"] and "groupId" in rejected[2]["detail"]
    stored = {e.message_id for e in await sp.events(sessions, env.id)}
    assert stored == {good_identify["messageId"], good_track["messageId"]}


async def test_tracking_api_batch_envelope_is_accepted(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    body = {"batch": [identify(user_id, {"a": 1}), track(user_id, "Clicked")], "sentAt": iso(at(0))}
    assert await post(http, env, body) == ok(2)
    assert len(await sp.events(sessions, env.id)) == 2


async def test_batch_with_no_valid_message_is_refused(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    batch = [track("u", ""), identify(None, {"a": 1}), 17]
    response = await http.post(env.webhook_path, json=batch)

    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid_batch"
    assert isinstance(answer["detail"], str) and answer["detail"]
    assert [(r["index"], r["error"]) for r in answer["rejected"]] == [
        (0, "missing_event"),
        (1, "missing_identity"),
        (2, "invalid_message"),
    ]
    assert await sp.counts(sessions, env.id) == sp.NOTHING


# environments


async def test_environments_keep_their_own_users_and_rows(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    staging = await make_environment("staging")
    production = await make_environment("production")
    user_id, org = new_id("user"), new_id("org")

    prod_messages = [
        identify(user_id, {"plan": "enterprise", "name": "Ada"}, when=at(0)),
        sp.group(user_id, org, {"name": "Acme"}, when=at(0)),
    ]
    assert await post(http, production, prod_messages) == ok(2)
    before = await sp.counts(sessions, production.id)

    # The same user (and even the same messageIds) in staging, newer and different.
    staging_messages = [
        identify(
            user_id,
            {"plan": "trial", "qa": True},
            messageId=prod_messages[0]["messageId"],
            when=at(9),
        ),
        sp.group(user_id, org, {"name": "Acme (staging)"}, when=at(9)),
        track(user_id, "Test Event", {"company_id": org}, when=at(9)),
    ]
    assert await post(http, staging, staging_messages) == ok(3)

    prod_user = await sp.user(sessions, production.id, user_id)
    staging_user = await sp.user(sessions, staging.id, user_id)
    assert prod_user is not None and staging_user is not None
    assert prod_user.id != staging_user.id
    assert prod_user.traits == {"plan": "enterprise", "name": "Ada"}
    assert prod_user.last_seen_at == at(0)
    assert staging_user.traits == {"plan": "trial", "qa": True}
    prod_company = await sp.company(sessions, production.id, org)
    assert prod_company is not None and prod_company.traits == {"name": "Acme"}
    assert await sp.counts(sessions, production.id) == before
    assert len(await sp.events(sessions, staging.id)) == 3


async def test_concurrent_batches_about_the_same_users_all_land(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    # Segment delivers in parallel: batches touching the same users and companies in
    # different orders must neither deadlock nor lose a message, and the newest trait wins.
    env = await make_environment()
    users = [new_id("user") for _ in range(5)]
    orgs = [new_id("org") for _ in range(3)]
    batches: list[list[dict[str, Any]]] = []
    for b in range(12):
        order = users[b % 5 :] + users[: b % 5]
        if b % 2:
            order.reverse()
        batch: list[dict[str, Any]] = []
        for i, u in enumerate(order):
            batch.append(identify(u, {"batch": b, f"seen_{b}": True}, when=at(b)))
            batch.append(sp.group(u, orgs[i % 3], {"last_batch": b}, when=at(b)))
            batch.append(track(u, "Synced", {"company_id": orgs[(i + 1) % 3]}, when=at(b)))
        batches.append(batch)

    answers = await asyncio.gather(*(post(http, env, batch) for batch in batches))

    assert [a["stored"] for a in answers] == [15] * 12
    assert len(await sp.events(sessions, env.id)) == 12 * 15
    for u in users:
        user = await sp.user(sessions, env.id, u)
        assert user is not None
        assert user.traits == {"batch": 11, **{f"seen_{b}": True for b in range(12)}}
        assert (user.first_seen_at, user.last_seen_at) == (at(0), at(11))
    for org in orgs:
        company = await sp.company(sessions, env.id, org)
        assert company is not None
        assert company.traits == {"last_batch": 11}
        assert (company.first_seen_at, company.last_seen_at) == (at(0), at(11))
    assert len(await sp.memberships(sessions, env.id)) == 5 * 3
