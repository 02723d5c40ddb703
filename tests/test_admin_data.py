"""Browsing what Segment sent, over the admin API: users, companies, events, stats, a user's
deletion, and that one environment's id never reaches another environment's rows.

Data arrives the way Segment delivers it: real messages POSTed to the environment's webhook.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy import func, or_, select
from starlette.routing import BaseRoute, Mount, Route

from integration.app import create_app
from integration.config import Settings
from integration.store.db import SessionMaker, transaction
from integration.store.models import (
    AnonymousId,
    Event,
    IdentityLog,
    Membership,
    OutboxMessage,
    User,
)
from tests.admin_support import collect, error, ids, ok, row_counts, send
from tests.conftest import ADMIN_TOKEN
from tests.segment_payloads import (
    Env,
    MakeEnv,
    alias,
    at,
    group,
    identify,
    iso,
    new_id,
    page,
    track,
)


def api(env: Env, rest: str = "") -> str:
    return f"/api/environments/{env.id}{rest}"


def cursor(key: Any) -> str:
    """A cursor as the API encodes one, for keys it never gave out."""
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# users


async def test_users_filter_by_trait_value(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    ada, bob, cy = new_id("ada"), new_id("bob"), new_id("cy")
    await send(
        http,
        env.webhook_path,
        identify(ada, {"plan": "pro", "role": "admin", "seats": 5}),
        identify(bob, {"plan": "pro", "role": "member", "seats": 12}),
        identify(cy, {"plan": "free", "role": "admin"}),
    )

    def users(*traits: str) -> Any:
        return admin.get(api(env, "/users"), params=[("trait", t) for t in traits])

    assert set(ids(ok(await users("plan:pro"))["items"], "user_id")) == {ada, bob}
    assert ids(ok(await users("plan:pro", "role:admin"))["items"], "user_id") == [ada]
    assert ids(ok(await users("seats:12"))["items"], "user_id") == [bob]  # numbers as text
    assert ok(await users("plan:enterprise"))["items"] == []
    assert ok(await users("missing:x"))["items"] == []
    assert len(ok(await users())["items"]) == 3
    for bad in ("plan", ":pro", ""):
        error(await users(bad), 400, field="trait")


async def test_users_seen_since(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    early, late = new_id("early"), new_id("late")
    await send(http, env.webhook_path, identify(early, {}, when=at(0)))
    await send(http, env.webhook_path, identify(late, {}, when=at(60)))

    def since(value: str) -> Any:
        return admin.get(api(env, "/users"), params={"seen_since": value})

    assert ids(ok(await since(iso(at(30))))["items"], "user_id") == [late]
    assert ids(ok(await since(iso(at(60))))["items"], "user_id") == [late]  # at or after
    assert set(ids(ok(await since(iso(at(-1))))["items"], "user_id")) == {early, late}
    # A time without an offset is UTC; one with an offset is honoured.
    assert ids(ok(await since(at(30).replace(tzinfo=None).isoformat()))["items"], "user_id") == [
        late
    ]
    two_hours_ahead = at(30).astimezone(UTC).replace(tzinfo=None).isoformat() + "+02:00"
    assert len(ok(await since(two_hours_ahead))["items"]) == 2
    for bad in ("yesterday", "2024-13-01", "0001-01-01T00:00:00+05:00"):
        error(await since(bad), 400, field="seen_since")


async def test_users_cursor_pagination_returns_everyone_once_newest_first(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    created = [f"user-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(11)]
    for user_id in created:
        await send(http, env.webhook_path, identify(user_id, {"plan": "pro"}))

    pages = await collect(admin, api(env, "/users"), params={"limit": 4})
    assert [len(p) for p in pages] == [4, 4, 3]
    seen = [u["user_id"] for p in pages for u in p]
    assert seen == created[::-1]
    # Filters and the cursor work together.
    filtered = await collect(admin, api(env, "/users"), params={"limit": 5, "trait": "plan:pro"})
    assert [u["user_id"] for p in filtered for u in p] == created[::-1]
    # A page exactly as long as what is left ends the listing.
    exact = await collect(admin, api(env, "/users"), params={"limit": 11})
    assert [len(p) for p in exact] == [11]


@pytest.mark.parametrize("resource", ["users", "companies", "events", "deliveries"])
@pytest.mark.parametrize("value", ["0", "501", "-1", "abc", "1.5", "", "10000000000000000000000"])
async def test_limit_out_of_bounds_is_refused(
    admin: httpx.AsyncClient, make_environment: MakeEnv, resource: str, value: str
) -> None:
    env = await make_environment()
    response = await admin.get(api(env, f"/{resource}"), params={"limit": value})
    error(response, 400, field="limit")


@pytest.mark.parametrize("resource", ["users", "companies", "events", "deliveries"])
async def test_limit_bounds_are_inclusive(
    admin: httpx.AsyncClient, make_environment: MakeEnv, resource: str
) -> None:
    env = await make_environment()
    for value in ("1", "500"):
        page_ = ok(await admin.get(api(env, f"/{resource}"), params={"limit": value}))
        assert page_ == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("resource", ["users", "companies", "deliveries", "events"])
@pytest.mark.parametrize(
    "value",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        cursor({"id": 1}),
        cursor([]),
        cursor(["abc"]),
        cursor([None]),
        cursor([1.5]),
        cursor([True]),
        cursor([2**63]),
        cursor([-5]),
        cursor(["2024-05-14T09:30:00+00:00", "x"]),
        cursor(["yesterday", 5]),
        cursor([None, 5]),
        cursor(["0001-01-01T00:00:00+05:00", 5]),
        cursor(["2024-05-14T09:30:00+00:00", 2**63]),
    ],
)
async def test_cursor_not_given_out_by_the_api_is_refused(
    admin: httpx.AsyncClient, make_environment: MakeEnv, resource: str, value: str
) -> None:
    env = await make_environment()
    response = await admin.get(api(env, f"/{resource}"), params={"cursor": value})
    error(response, 400, field="cursor")


async def test_user_detail_has_traits_anonymous_ids_companies_and_recent_events(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    user_id, anon_web, anon_ios = new_id("user"), new_id("anon"), new_id("anon")
    visit = page(None, "Pricing", anonymousId=anon_web, when=at(0))
    signup = identify(user_id, {"name": "Ada", "plan": "pro"}, anonymousId=anon_web, when=at(1))
    joined = group(user_id, "acme", {"name": "Acme Inc", "plan": "enterprise"}, when=at(2))
    viewed = track(user_id, "Report Viewed", {"company_id": "globex"}, when=at(3))
    mobile = identify(user_id, {"plan": "team"}, anonymousId=anon_ios, when=at(4))
    for message in (visit, signup, joined, viewed, mobile):
        await send(http, env.webhook_path, message)

    detail = ok(await admin.get(api(env, f"/users/{user_id}")))
    assert detail["user_id"] == user_id
    assert detail["traits"] == {"name": "Ada", "plan": "team"}
    assert detail["anonymous_ids"] == sorted([anon_web, anon_ios])
    assert [c["group_id"] for c in detail["companies"]] == ["acme", "globex"]
    assert detail["companies"][0]["traits"] == {"name": "Acme Inc", "plan": "enterprise"}
    recent = detail["recent_events"]
    assert [e["message_id"] for e in recent] == [
        m["messageId"] for m in (mobile, viewed, joined, signup, visit)
    ]
    assert recent[-1]["user_id"] == user_id  # the anonymous page view now belongs to the user
    assert recent[1]["properties"] == {"company_id": "globex"}
    assert parse_time(detail["first_seen_at"]) == at(1)
    assert parse_time(detail["last_seen_at"]) == at(4)

    error(await admin.get(api(env, f"/users/{new_id('nobody')}")), 404)


async def test_user_ids_with_reserved_characters_are_addressable(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    user_id = "ada@acme.test+1 #2?x=ü"
    await send(http, env.webhook_path, identify(user_id, {"plan": "pro"}))
    detail = ok(await admin.get(api(env, "/users/" + quote(user_id, safe=""))))
    assert detail["user_id"] == user_id
    error(await admin.get(api(env, "/users/%00")), 404)
    error(await admin.get(api(env, "/companies/%00")), 404)
    error(await admin.delete(api(env, "/users/%00")), 404)


# companies


async def test_companies_list_and_detail_with_members(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    ada, bob, cy = "ada-" + new_id("u"), "bob-" + new_id("u"), "cy-" + new_id("u")
    await send(
        http,
        env.webhook_path,
        group(ada, "acme", {"name": "Acme", "plan": "enterprise"}, when=at(0)),
        group(bob, "acme", {"employees": 120}, when=at(1)),
        group(ada, "globex", {"name": "Globex", "plan": "free"}, when=at(2)),
    )
    # A track event naming the company (company_id property) makes its user a member too.
    await send(http, env.webhook_path, track(cy, "Report Viewed", {"company_id": "acme"}))

    listed = ok(await admin.get(api(env, "/companies")))
    assert listed["next_cursor"] is None
    assert [c["group_id"] for c in listed["items"]] == ["globex", "acme"]  # newest first
    acme = ok(await admin.get(api(env, "/companies/acme")))
    assert acme["traits"] == {"name": "Acme", "plan": "enterprise", "employees": 120}
    assert acme["member_count"] == 3
    assert [m["user_id"] for m in acme["members"]] == [ada, bob, cy]
    globex = ok(await admin.get(api(env, "/companies/globex")))
    assert (globex["member_count"], [m["user_id"] for m in globex["members"]]) == (1, [ada])

    by_trait = ok(await admin.get(api(env, "/companies"), params={"trait": "plan:free"}))
    assert [c["group_id"] for c in by_trait["items"]] == ["globex"]
    pages = await collect(admin, api(env, "/companies"), params={"limit": 1})
    assert [[c["group_id"] for c in p] for p in pages] == [["globex"], ["acme"]]
    error(await admin.get(api(env, "/companies/initech")), 404)


# events


async def test_events_filters(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    ada, bob, anon = new_id("ada"), new_id("bob"), new_id("anon")
    messages = {
        "ada_identify": identify(ada, {"plan": "pro"}, when=at(0)),
        "ada_signup": track(ada, "Signed Up", {"company_id": "acme"}, when=at(1)),
        "anon_page": page(None, "Pricing", anonymousId=anon, when=at(2)),
        "bob_view": track(bob, "Report Viewed", {"company_id": "acme"}, when=at(3)),
        "ada_view": track(ada, "Report Viewed", {"company_id": "globex"}, when=at(4)),
        "bob_group": group(bob, "initech", {"name": "Initech"}, when=at(5)),
    }
    await send(http, env.webhook_path, *messages.values())
    by_id = {m["messageId"]: name for name, m in messages.items()}

    async def names(**params: str) -> list[str]:
        items = ok(await admin.get(api(env, "/events"), params=params))["items"]
        return [by_id[e["message_id"]] for e in items]

    everything = await names()
    assert everything == list(messages)[::-1]  # newest first
    assert await names(user_id=ada) == ["ada_view", "ada_signup", "ada_identify"]
    assert await names(anonymous_id=anon) == ["anon_page"]
    assert await names(company="acme") == ["bob_view", "ada_signup"]
    assert await names(company="initech") == ["bob_group"]
    assert await names(type="track") == ["ada_view", "bob_view", "ada_signup"]
    assert await names(type="page") == ["anon_page"]
    assert await names(name="Report Viewed") == ["ada_view", "bob_view"]
    assert await names(name="Report Viewed", user_id=bob) == ["bob_view"]
    assert await names(since=iso(at(3))) == ["bob_group", "ada_view", "bob_view"]  # inclusive
    assert await names(until=iso(at(1))) == ["ada_identify"]  # exclusive
    assert await names(since=iso(at(1)), until=iso(at(4)), type="track") == [
        "bob_view",
        "ada_signup",
    ]
    assert await names(user_id=new_id("nobody")) == []
    assert await names(type="screen") == []

    first = ok(await admin.get(api(env, "/events"), params={"limit": 1}))["items"][0]
    message = messages["bob_group"]
    assert first["type"] == "group" and first["group_id"] == "initech"
    assert first["traits"] == {"name": "Initech"}
    assert first["context"] == message["context"]
    assert parse_time(first["timestamp"]) == at(5)
    assert first["sent_at"] is not None and first["received_at"] is not None

    for bad in ("since", "until"):
        error(await admin.get(api(env, "/events"), params={bad: "last tuesday"}), 400, field=bad)
    for bad in ("user_id", "anonymous_id", "company", "type", "name"):
        nul = await admin.get(api(env, "/events"), params={bad: "a\x00b"})
        error(nul, 400, field=bad)
        long = await admin.get(api(env, "/events"), params={bad: "x" * 1025})
        error(long, 400, field=bad)


async def test_events_cursor_pagination_returns_all_once_in_order(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    # Pairs share a timestamp, so the order (and the cursor) must break ties by id.
    messages = [track(user_id, f"Step {i}", {"step": i}, when=at(i // 2)) for i in range(25)]
    await send(http, env.webhook_path, *messages[:13])
    await send(http, env.webhook_path, *messages[13:])

    pages = await collect(admin, api(env, "/events"), params={"limit": 10})
    assert [len(p) for p in pages] == [10, 10, 5]
    flat = [e for p in pages for e in p]
    assert sorted(e["message_id"] for e in flat) == sorted(m["messageId"] for m in messages)
    keys = [(parse_time(e["timestamp"]), e["id"]) for e in flat]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == 25
    whole = ok(await admin.get(api(env, "/events"), params={"limit": 500}))
    assert ids(whole["items"], "id") == ids(flat, "id") and whole["next_cursor"] is None

    # Filtered pagination: the cursor carries on within the filter.
    later = await collect(
        admin, api(env, "/events"), params={"limit": 3, "since": iso(at(6)), "type": "track"}
    )
    assert [len(p) for p in later] == [3, 3, 3, 3, 1]
    assert {e["properties"]["step"] for p in later for e in p} == set(range(12, 25))


# stats


async def test_stats_count_users_companies_events_and_deliveries(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    empty = ok(await admin.get(api(env, "/stats")))
    assert empty == {
        "users": 0,
        "companies": 0,
        "events_total": 0,
        "events_last_hour": 0,
        "events_last_day": 0,
        "outbound_pending": 0,
        "outbound_delivered": 0,
        "outbound_dead": 0,
        "last_inbound_at": None,
        "last_outbound_at": None,
    }

    ada, bob = new_id("ada"), new_id("bob")
    before = datetime.now(UTC)
    await send(
        http,
        env.webhook_path,
        identify(ada, {"plan": "pro"}),
        identify(bob, {"plan": "free"}),
        group(ada, "acme", {"name": "Acme"}),
        track(ada, "Report Viewed"),
        track(bob, "Report Viewed"),
    )
    after = datetime.now(UTC)
    # Events are counted by when they arrived, not by the time the sender gave them; these
    # two arrived long ago (written straight to the table to travel in time).
    now = datetime.now(UTC)
    delivered_at = now - timedelta(minutes=5)
    async with transaction(sessions) as session:
        for hours in (2, 30):
            session.add(
                Event(
                    environment_id=env.id,
                    message_id=new_id("old"),
                    type="track",
                    name="Old",
                    user_id=ada,
                    timestamp=now - timedelta(hours=hours),
                    created_at=now - timedelta(hours=hours),
                )
            )
        for status, count in (("pending", 3), ("delivered", 2), ("dead", 1)):
            for _ in range(count):
                session.add(_outbox_row(env, status, now, delivered_at))

    stats = ok(await admin.get(api(env, "/stats")))
    last_inbound = parse_time(stats.pop("last_inbound_at"))
    assert before - timedelta(seconds=5) < last_inbound < after + timedelta(seconds=5)
    assert parse_time(stats.pop("last_outbound_at")) == delivered_at
    assert stats == {
        "users": 2,
        "companies": 1,
        "events_total": 7,
        "events_last_hour": 5,
        "events_last_day": 6,
        "outbound_pending": 3,
        "outbound_delivered": 2,
        "outbound_dead": 1,
    }


def _outbox_row(env: Env, status: str, now: datetime, delivered_at: datetime) -> OutboxMessage:
    message_id = str(uuid.uuid4())
    return OutboxMessage(
        environment_id=env.id,
        message_id=message_id,
        type="track",
        payload={"type": "track", "event": "Flow Started", "messageId": message_id},
        size_bytes=64,
        status=status,
        # Never due: no worker of another test may pick these up.
        next_attempt_at=now + timedelta(days=365),
        delivered_at=delivered_at if status == "delivered" else None,
    )


# replaying deliveries (what replay does is covered with the outbound tests)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"idz": [1]}, "idz"),  # a typo must not replay every dead delivery
        ({"ids": [1, "2"]}, "ids"),
        ({"ids": [True]}, "ids"),
        ({"ids": [2**63]}, "ids"),
        ({"ids": [0]}, "ids"),
        ({"ids": 5}, "ids"),
        ({"message_ids": ["ok", 3]}, "message_ids"),
        ({"message_ids": ["nul\x00byte"]}, "message_ids"),
    ],
)
async def test_replay_refuses_what_it_cannot_match(
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
    body: dict[str, Any],
    field: str,
) -> None:
    env = await make_environment()
    now = datetime.now(UTC)
    async with transaction(sessions) as session:
        session.add(_outbox_row(env, "dead", now, now))
    error(await admin.post(api(env, "/deliveries/replay"), json=body), 400, field=field)
    dead = ok(await admin.get(api(env, "/deliveries"), params={"status": "dead"}))["items"]
    assert len(dead) == 1
    replayed = ok(await admin.post(api(env, "/deliveries/replay"), json={"ids": []}))
    assert replayed["replayed"] == 0


# deleting a user


async def _traces(sessions: SessionMaker, env: Env, user_id: str, anons: list[str]) -> int:
    """Rows anywhere that still name the user or one of their anonymous ids."""
    async with sessions() as s:
        total = 0
        for stmt in (
            select(func.count()).where(User.environment_id == env.id, User.user_id == user_id),
            select(func.count()).where(
                AnonymousId.environment_id == env.id,
                or_(AnonymousId.user_id == user_id, AnonymousId.anonymous_id.in_(anons)),
            ),
            select(func.count()).where(
                Membership.environment_id == env.id, Membership.user_id == user_id
            ),
            select(func.count()).where(
                Event.environment_id == env.id,
                or_(Event.user_id == user_id, Event.anonymous_id.in_(anons)),
            ),
            select(func.count()).where(
                IdentityLog.environment_id == env.id,
                or_(IdentityLog.user_id == user_id, IdentityLog.from_id.in_([user_id, *anons])),
            ),
        ):
            total += await s.scalar(stmt) or 0
        return total


async def test_deleting_a_user_erases_everything_about_them_and_nothing_else(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    # Her earlier identified userId is merged into her: the environment allows it.
    env = await make_environment(allow_identified_merges=True)
    other_env = await make_environment()
    ada, bob = new_id("ada"), new_id("bob")
    anon, old_id = new_id("anon"), new_id("old")
    ada_messages = [
        page(None, "Pricing", anonymousId=anon, when=at(0)),  # before she signed up
        track(None, "Trial Started", anonymousId=anon, when=at(1)),
        identify(ada, {"name": "Ada", "email": "ada@acme.test"}, anonymousId=anon, when=at(2)),
        group(ada, "acme", {"name": "Acme"}, when=at(3)),
        track(ada, "Report Viewed", {"company_id": "globex"}, when=at(4)),
        identify(old_id, {"legacy": True}, when=at(5)),
        alias(ada, old_id, when=at(6)),  # an earlier user id of hers
    ]
    bob_messages = [
        identify(bob, {"name": "Bob"}, when=at(0)),
        group(bob, "acme", {"name": "Acme"}, when=at(1)),
        track(bob, "Report Viewed", {"company_id": "acme"}, when=at(2)),
    ]
    for message in ada_messages + bob_messages:
        await send(http, env.webhook_path, message)
    for message in (identify(ada, {"name": "Ada elsewhere"}), track(ada, "Signed Up")):
        await send(http, other_env.webhook_path, message)

    detail = ok(await admin.get(api(env, f"/users/{ada}")))
    assert set(detail["anonymous_ids"]) == {anon, old_id}
    ada_events = len(ada_messages)
    assert len(detail["recent_events"]) == ada_events
    bob_before = ok(await admin.get(api(env, f"/users/{bob}")))
    other_before = await row_counts(sessions, other_env.id)

    deleted = ok(await admin.delete(api(env, f"/users/{ada}")))
    assert deleted == {
        "user_id": ada,
        "deleted": {"events": ada_events, "memberships": 2, "anonymous_ids": 2, "users": 1},
    }

    assert await _traces(sessions, env, ada, [anon, old_id]) == 0
    error(await admin.get(api(env, f"/users/{ada}")), 404)
    error(await admin.delete(api(env, f"/users/{ada}")), 404)
    assert ok(await admin.get(api(env, "/events"), params={"user_id": ada}))["items"] == []
    assert ok(await admin.get(api(env, "/events"), params={"anonymous_id": anon}))["items"] == []
    # Bob, the companies, and Ada in another environment are untouched.
    assert ok(await admin.get(api(env, f"/users/{bob}"))) == bob_before
    acme = ok(await admin.get(api(env, "/companies/acme")))
    assert [m["user_id"] for m in acme["members"]] == [bob]
    ok(await admin.get(api(env, "/companies/globex")))
    assert await row_counts(sessions, other_env.id) == other_before
    ok(await admin.get(f"/api/environments/{other_env.id}/users/{ada}"))
    stats = ok(await admin.get(api(env, "/stats")))
    assert (stats["users"], stats["events_total"]) == (1, len(bob_messages))


async def test_deleting_a_user_keeps_events_of_others_who_shared_a_device(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    """Two people on one browser: the anonymousId links to the first; the second's own
    events (with their userId) are the second's data and survive the first's deletion."""
    env = await make_environment()
    ada, bob, shared = new_id("ada"), new_id("bob"), new_id("anon")
    await send(http, env.webhook_path, identify(ada, {}, anonymousId=shared, when=at(0)))
    bobs = track(bob, "Report Viewed", anonymousId=shared, when=at(1))
    await send(http, env.webhook_path, bobs)

    deleted = ok(await admin.delete(api(env, f"/users/{ada}")))
    assert deleted["deleted"]["events"] == 1
    events = ok(await admin.get(api(env, "/events")))["items"]
    assert [e["message_id"] for e in events] == [bobs["messageId"]]
    ok(await admin.get(api(env, f"/users/{bob}")))


# isolation


async def test_one_environment_never_reads_or_deletes_another_environments_rows(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    mine, theirs = await make_environment(), await make_environment()
    user_id, anonymous_id = new_id("user"), new_id("anon")
    await send(
        http,
        theirs.webhook_path,
        identify(user_id, {"plan": "pro"}, anonymousId=anonymous_id),
        group(user_id, "acme", {"name": "Acme"}),
        track(user_id, "Report Viewed", {"company_id": "acme"}),
    )
    theirs_before = await row_counts(sessions, theirs.id)

    error(await admin.get(api(mine, f"/users/{user_id}")), 404)
    error(await admin.get(api(mine, "/companies/acme")), 404)
    error(await admin.delete(api(mine, f"/users/{user_id}")), 404)
    for params in ({"user_id": user_id}, {"anonymous_id": anonymous_id}, {"company": "acme"}, {}):
        assert ok(await admin.get(api(mine, "/events"), params=params))["items"] == []
    assert ok(await admin.get(api(mine, "/users")))["items"] == []
    assert ok(await admin.get(api(mine, "/users"), params={"trait": "plan:pro"}))["items"] == []
    assert ok(await admin.get(api(mine, "/companies")))["items"] == []
    assert ok(await admin.get(api(mine, "/deliveries")))["items"] == []
    stats = ok(await admin.get(api(mine, "/stats")))
    assert (stats["users"], stats["companies"], stats["events_total"]) == (0, 0, 0)
    # A cursor from their listing, used on mine, shows nothing of theirs either.
    for _ in range(2):
        await send(http, theirs.webhook_path, identify(new_id("user"), {}))
    their_page = ok(await admin.get(api(theirs, "/users"), params={"limit": 1}))
    assert their_page["next_cursor"] is not None
    mine_page = ok(
        await admin.get(api(mine, "/users"), params={"cursor": their_page["next_cursor"]})
    )
    assert mine_page["items"] == []

    assert (await row_counts(sessions, theirs.id))["users"] == theirs_before["users"] + 2
    ok(await admin.get(api(theirs, f"/users/{user_id}")))


DATA_ROUTES = [
    ("GET", ""),
    ("GET", "/users"),
    ("GET", "/users/someone"),
    ("DELETE", "/users/someone"),
    ("GET", "/companies"),
    ("GET", "/companies/acme"),
    ("GET", "/events"),
    ("GET", "/stats"),
    ("GET", "/deliveries"),
    ("POST", "/deliveries/replay"),
    ("POST", "/product-events"),
]


# A well-formed id no environment has; fixed, so every xdist worker collects the same tests.
@pytest.mark.parametrize(
    "env_id", ["5a72adc8-9bce-4ea6-9d23-11f8190f7e09", "not-a-uuid", "0", "🙂"]
)
@pytest.mark.parametrize(("method", "rest"), DATA_ROUTES)
async def test_unknown_or_malformed_environment_is_404_json(
    admin: httpx.AsyncClient, env_id: str, method: str, rest: str
) -> None:
    body = {"type": "track", "userId": "u", "event": "E"} if rest == "/product-events" else None
    response = await admin.request(method, f"/api/environments/{env_id}{rest}", json=body)
    assert error(response, 404)["error"] == "not_found"


# authentication


def _routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    out: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, Mount):
            out += _routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            out.append((prefix + route.path_format, route))  # without convertors
    return out


def api_operations(settings: Settings) -> list[tuple[str, str]]:
    """Every (method, path template) under /api in the app's own route table."""
    found = []
    for path, route in _routes(list(create_app(settings).routes)):
        if path.startswith("/api/"):
            found += [(m, path) for m in sorted((route.methods or set()) - {"HEAD"})]
    return found


async def test_every_api_route_requires_the_token(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    settings: Settings,
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    await send(http, env.webhook_path, group(user_id, "acme", {"name": "Acme"}))
    values = {
        "env_id": str(env.id),
        "user_id": user_id,
        "group_id": "acme",
        "key_id": "k",
        "conflict_id": "1",
        "message_id": "m",
        "direction": "inbound",
    }
    operations = api_operations(settings)
    assert len(operations) >= 17, operations
    wrong = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Token {ADMIN_TOKEN}"},
        {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()},
        {"Authorization": "Bearer"},
    ]
    for method, template in operations:
        path = template.format(**values)
        for headers in wrong:
            response = await http.request(method, path, headers=headers, json={})
            body = error(response, 401)
            assert body["error"] == "unauthorized", (method, path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing happened: the environment, its user and its key are as they were.
    ok(await admin.get(f"/api/environments/{env.id}/users/{user_id}"))
    ok(await http.post(env.webhook_path, json=identify(user_id, {})))


async def test_unknown_api_paths_answer_401_without_a_token(http: httpx.AsyncClient) -> None:
    """Without the token, /api reveals nothing, not even which routes exist."""
    for path in ("/api/", "/api/nope", "/api/environments/x/secrets"):
        error(await http.get(path), 401)
