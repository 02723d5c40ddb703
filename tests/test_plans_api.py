"""Tracking plans and the quarantine over the admin API against the real server: versions,
422 naming the path of a bad plan, promotion, a draft from stored events, and messages kept
whole in quarantine, listed, discarded and released back into the store or the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from integration.admin.quarantine import store_or_send
from integration.config import Settings
from integration.inbound import ingest
from integration.inbound.digests import InstallKey
from integration.plans import gate, quarantine
from integration.plans import service as plans
from integration.plans.check import Verdict, check
from integration.spec import parse
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment, Event, OutboxMessage, Quarantined
from tests.admin_support import error, ok, send
from tests.outbound_support import cli
from tests.segment_payloads import MakeEnv, event, identify, new_id, track, user

PLAN = {
    "events": [
        {
            "type": "track",
            "name": "Order Completed",
            "properties": {"total": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
            "required": ["total"],
        },
        {"type": "identify", "properties": {"email": {"type": "string"}}},
    ]
}
STRICT = {"unplanned_event": "quarantine", "unplanned_property": "quarantine"}


def base(env_id: uuid.UUID, direction: str = "inbound") -> str:
    return f"/api/environments/{env_id}/tracking-plan/{direction}"


async def put_plan(
    admin: httpx.AsyncClient, env_id: uuid.UUID, direction: str = "inbound", **body: Any
) -> dict[str, Any]:
    found: dict[str, Any] = ok(
        await admin.put(base(env_id, direction), json={"plan": PLAN, **STRICT, **body})
    )
    return found


async def raw(session: AsyncSession) -> asyncpg.Connection:
    """The session's own asyncpg connection, in its transaction (as the pipeline writes)."""
    pg: asyncpg.Connection = (
        await (await session.connection()).get_raw_connection()
    ).driver_connection
    return pg


async def arrive(
    sessions: SessionMaker, settings: Settings, env_id: uuid.UUID, *messages: dict[str, Any]
) -> list[Verdict]:
    """The gate by hand, as the webhook's step does it (tests/test_plans_pipeline.py drives the
    real one): judge by the plan in force and store what the verdicts say, in one transaction."""
    async with transaction(sessions) as session:
        env = await session.get_one(Environment, env_id)
        row = await plans.current(session, env_id, "inbound")
        pg = await raw(session)
        judged = await gate.judge(pg, row and plans.compiled(row), env_id, messages)
        verdicts = judged.verdicts
        now = datetime.now(UTC)
        stored = [parse(dict(v.message), now=now) for v in verdicts if v.message is not None]
        await ingest.store(pg, env_id, env.company_property, stored, InstallKey.of(settings))
    return verdicts


async def test_every_change_is_a_new_version(
    admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment("plan")
    error(await admin.get(base(env.id)), 404)
    first = await put_plan(admin, env.id)
    assert (first["version"], first["unplanned_property"]) == (1, "quarantine")
    second = await put_plan(admin, env.id, unplanned_property="keep")
    assert second["version"] == 2 and second["plan"] == PLAN
    current = ok(await admin.get(base(env.id)))
    assert (current["version"], current["unplanned_property"]) == (2, "keep")
    page = ok(await admin.get(base(env.id) + "/versions", params={"limit": 1}))
    assert [v["version"] for v in page["items"]] == [2]
    rest = ok(await admin.get(base(env.id) + "/versions", params={"cursor": page["next_cursor"]}))
    assert [v["version"] for v in rest["items"]] == [1] and rest["next_cursor"] is None
    error(await admin.get(base(env.id, "outbound")), 404)  # directions are apart
    error(await admin.get(base(env.id, "sideways")), 404)


async def test_a_bad_plan_is_422_naming_its_path(
    admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment("plan")
    bad = {"events": [PLAN["events"][0], {"type": "track", "properties": {}}]}
    answer = error(
        await admin.put(base(env.id), json={"plan": bad}), 422, field="plan.events[1].name"
    )
    assert answer["error"] == "invalid_plan"
    typo = {"events": [{"type": "track", "name": "x", "properties": {"a": {"type": "strnig"}}}]}
    error(
        await admin.put(base(env.id), json={"plan": typo}),
        422,
        field="plan.events[0].properties.a.type",
    )
    error(await admin.put(base(env.id), json={"plan": PLAN, "unplanned_event": "drop"}), 400)
    error(await admin.get(base(env.id)), 404)  # nothing was saved


async def test_promotion_copies_the_plan_to_production(
    admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    staging, production = await make_environment("staging"), await make_environment("prod")
    await put_plan(admin, staging.id, "outbound")
    promoted = ok(
        await admin.post(base(staging.id, "outbound") + "/promote", json={"to": str(production.id)})
    )
    assert (promoted["environment_id"], promoted["version"]) == (str(production.id), 1)
    assert ok(await admin.get(base(production.id, "outbound")))["plan"] == PLAN
    error(await admin.post(base(staging.id) + "/promote", json={"to": str(production.id)}), 404)
    error(
        await admin.post(base(staging.id, "outbound") + "/promote", json={"to": str(uuid.uuid4())}),
        404,
    )


async def test_a_draft_describes_what_was_stored(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment("draft")
    now = datetime.now(UTC)
    await send(
        http,
        env.webhook_path,
        track("u1", "Signed Up", {"plan": "pro", "seats": 3}, when=now),
        track("u2", "Signed Up", {"plan": "free"}, when=now),
    )
    drafted = ok(await admin.post(base(env.id) + "/draft", params={"days": 1}))
    (entry,) = drafted["plan"]["events"]
    assert (entry["type"], entry["name"], entry["required"]) == ("track", "Signed Up", ["plan"])
    assert entry["properties"] == {"plan": {"type": "string"}, "seats": {"type": "integer"}}
    ok(await admin.put(base(env.id), json={"plan": drafted["plan"]}))  # usable as it is
    error(await admin.post(base(env.id) + "/draft", params={"days": 0}), 400, field="days")


async def test_an_unplanned_property_is_stored_without_it_kept_whole_and_restored_on_release(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment("quarantine")
    await put_plan(admin, env.id)
    message = track("u1", "Order Completed", {"total": 10, "currency": "EUR", "debug_blob": "x"})
    await arrive(sessions, settings, env.id, message)

    stored = await event(sessions, env.id, message["messageId"])
    assert stored.properties == {"total": 10, "currency": "EUR"}
    listed = ok(await admin.get(f"/api/environments/{env.id}/quarantine"))
    (row,) = listed["items"]
    assert row["message"] == message and row["held"] is False
    assert [(v["property"], v["rule"], v["sample"]) for v in row["violations"]] == [
        ("debug_blob", "unplanned_property", "x")
    ]

    done = ok(
        await admin.post(
            f"/api/environments/{env.id}/quarantine/release", json={"ids": [row["id"]]}
        )
    )
    assert done == {"done": 1, "more": False}
    restored = await event(sessions, env.id, message["messageId"])
    assert restored.properties == message["properties"]
    assert ok(await admin.get(f"/api/environments/{env.id}/quarantine"))["items"] == []


async def test_a_held_event_and_traits_are_stored_on_release_through_the_real_store(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment("held")
    await put_plan(admin, env.id)
    mystery = track("u2", "Mystery", {"a": 1})
    person = identify("u2", {"email": "a@b.test", "vip": True})
    for m in (mystery, person):
        await arrive(sessions, settings, env.id, m)
    async with transaction(sessions) as session:
        held = list(
            await session.scalars(select(Event).where(Event.message_id == mystery["messageId"]))
        )
        assert held == []  # held whole: not stored
        found = await user(sessions, env.id, "u2")
        assert found is not None and "vip" not in found.traits

    async with transaction(sessions) as session:
        rows = (await quarantine.pick(session, env.id, quarantine.Filter())).rows
        assert {r.message_id for r in rows} == {mystery["messageId"], person["messageId"]}
        deliver = store_or_send(
            session, await session.get_one(Environment, env.id), InstallKey.of(settings)
        )
        assert await quarantine.release(session, env.id, rows, deliver, actor="test") == 2

    assert (await event(sessions, env.id, mystery["messageId"])).properties == {"a": 1}
    found = await user(sessions, env.id, "u2")
    assert found is not None and found.traits["vip"] is True


async def test_discard_by_filter_and_list_by_event(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment("discard")
    await put_plan(admin, env.id)
    unknown = [track("u3", "Unknown", {}) for _ in range(2)]
    known = track("u3", "Order Completed", {"total": "ten"})
    for m in (*unknown, known):
        await arrive(sessions, settings, env.id, m)
    counted = ok(await admin.get(base(env.id) + "/violations"))["items"]
    assert [(v["event"], v["property"], v["rule"], v["count"], v["sample"]) for v in counted] == [
        ("Unknown", None, "unplanned_event", 2, None),
        ("Order Completed", "total", "type", 1, "ten"),
    ]
    url = f"/api/environments/{env.id}/quarantine"
    assert len(ok(await admin.get(url, params={"event": "Unknown"}))["items"]) == 2
    page = ok(await admin.get(url, params={"limit": 2}))
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert len(ok(await admin.get(url, params={"cursor": page["next_cursor"]}))["items"]) == 1
    assert ok(await admin.post(url + "/discard", json={"event": "Unknown"}))["done"] == 2
    (left,) = ok(await admin.get(url))["items"]
    assert left["message"] == known and left["violations"][0]["rule"] == "type"
    error(await admin.post(url + "/discard", json={"evnt": "Unknown"}), 400, field="evnt")
    error(await admin.get(url, params={"direction": "up"}), 400, field="direction")
    async with transaction(sessions) as session:
        states = await session.scalars(
            select(Quarantined.state).where(Quarantined.environment_id == env.id)
        )
        assert sorted(states) == ["discarded", "discarded", "quarantined"]


async def test_a_held_outbound_message_is_queued_for_segment_on_release(
    admin: httpx.AsyncClient, sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment(
        "out",
        stream_enabled=True,
        segment_write_key="wk-" + uuid.uuid4().hex,
        segment_api_url="http://127.0.0.1:1",
    )
    await put_plan(admin, env.id, "outbound")
    message = {
        "type": "track",
        "userId": "u4",
        "event": "Order Completed",
        "messageId": new_id("o"),
        "properties": {"total": 1, "extra": 2},
    }
    async with transaction(sessions) as session:
        row = await plans.current(session, env.id, "outbound")
        assert row is not None
        verdict = check(message, plans.compiled(row))
        assert verdict.held  # outbound: not sent until released
        await quarantine.keep(await raw(session), env.id, "outbound", [(message, verdict)])
    release = f"/api/environments/{env.id}/quarantine/release"
    ok(await admin.patch(f"/api/environments/{env.id}", json={"stream_enabled": False}))
    refused = error(await admin.post(release, json={"direction": "outbound"}), 409)
    assert refused["error"] == "stream_off"  # published now, it would be dropped: kept instead
    assert len(ok(await admin.get(f"/api/environments/{env.id}/quarantine"))["items"]) == 1
    ok(await admin.patch(f"/api/environments/{env.id}", json={"stream_enabled": True}))
    # Switched back on, the platform's own "Segment Stream Enabled" is judged too: unplanned.
    (platform,) = ok(
        await admin.get(f"/api/environments/{env.id}/quarantine", params={"type": "track"})
    )["items"][:1]
    assert platform["event"] == "Segment Stream Enabled" and platform["held"]
    chosen = {"direction": "outbound", "event": "Order Completed"}
    done = ok(await admin.post(release, json=chosen))
    assert done == {"done": 1, "more": False}
    async with transaction(sessions) as session:
        queued = await session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.environment_id == env.id,
                OutboxMessage.message_id == message["messageId"],
            )
        )
        assert queued is not None and queued.payload["properties"] == {"total": 1, "extra": 2}


async def test_erasing_a_person_erases_their_quarantined_messages(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment("erase")
    await put_plan(admin, env.id)
    theirs, others = track("gone", "Mystery", {}), track("stays", "Mystery", {})
    await arrive(sessions, settings, env.id, identify("gone", {"email": "g@b.test"}))
    for m in (theirs, others):
        await arrive(sessions, settings, env.id, m)
    deleted = ok(await admin.delete(f"/api/environments/{env.id}/users/gone"))
    assert deleted["deleted"]["quarantine"] == 1
    (left,) = ok(await admin.get(f"/api/environments/{env.id}/quarantine"))["items"]
    assert left["message"]["userId"] == "stays"


async def test_plan_commands_end_to_end(
    env_vars: dict[str, str], admin: httpx.AsyncClient, make_environment: MakeEnv, tmp_path: Path
) -> None:
    staging, production = await make_environment("staging"), await make_environment("prod")
    none = await cli(env_vars, "plans", "show", staging.name, "inbound")
    assert none.code == 1 and "no inbound tracking plan" in none.out, none

    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(orjson.dumps({"events": [{"type": "track"}]}))
    bad = await cli(env_vars, "plans", "set", staging.name, "inbound", str(plan_file))
    assert bad.code == 1 and "events[0].name" in bad.out, bad
    plan_file.write_bytes(orjson.dumps(PLAN))
    args = ("--unplanned-property", "quarantine", "--json")
    made = await cli(env_vars, "plans", "set", staging.name, "inbound", str(plan_file), *args)
    assert made.code == 0, made
    assert orjson.loads(made.out)["version"] == 1

    shown = await cli(env_vars, "plans", "show", staging.name, "inbound")
    assert "version 1 of inbound" in shown.out and "Order Completed" in shown.out, shown
    moved = await cli(
        env_vars, "plans", "promote", staging.name, "inbound", "--to", production.name, "--json"
    )
    assert orjson.loads(moved.out)["environment_id"] == str(production.id), moved
    promoted = ok(await admin.get(base(production.id)))
    assert (promoted["plan"], promoted["unplanned_property"]) == (PLAN, "quarantine")

    drafted = await cli(env_vars, "plans", "draft", staging.name, "inbound", "--days", "3")
    assert drafted.code == 0 and orjson.loads(drafted.out) == {"events": []}, drafted


async def test_a_redelivered_message_is_quarantined_once_and_stays_2xx_worthy(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment("again")
    await put_plan(admin, env.id)
    held = track("u5", "Mystery", {})
    stripped = track("u5", "Order Completed", {"total": 1, "note": "x"})
    for _ in range(2):  # Segment's retry of the same request
        verdicts = await arrive(sessions, settings, env.id, held, stripped, dict(held))
        assert [v.held for v in verdicts] == [True, False, True]
    items = ok(await admin.get(f"/api/environments/{env.id}/quarantine"))["items"]
    assert sorted(i["message_id"] for i in items) == sorted(
        [held["messageId"], stripped["messageId"]]
    )
    assert (await event(sessions, env.id, stripped["messageId"])).properties == {"total": 1}
    counted = ok(await admin.get(base(env.id) + "/violations"))["items"]
    assert {(v["event"], v["count"]) for v in counted} == {("Mystery", 4), ("Order Completed", 2)}
