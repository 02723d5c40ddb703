"""Tracking plans in the one intake pipeline (#24), end to end: the real server process, the
Segment-like webhook sender and the Segment-like sink. Inbound, a message with an unplanned
property is stored without it and kept whole in quarantine, an unplanned event is held (and
answered 2xx), and releasing restores or stores them; outbound, a /v1 message the plan does
not fit is not sent until it is released. The ledger adds up exactly throughout, Segment's
redelivery changes nothing, and a plan saved in another process is in force within 2 s."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import GroupCommit, Target
from integration.inbound.service import validate
from integration.plans import service as plans
from integration.plans.cache import PlanCache
from integration.plans.document import Settings as PlanSettings
from integration.store.db import SessionMaker, transaction
from integration.store.models import Event
from tests import harness, processes
from tests.admin_support import ok
from tests.console_support import sign_in_http
from tests.intake_support import post as v1
from tests.outbound_support import Delivery, TimedSink, cli
from tests.segment_payloads import MakeEnv, event, new_id, track
from tests.segment_sender import SegmentSender
from tests.test_ledger import assert_sums

PLAN = {
    "events": [
        {
            "type": "track",
            "name": "Order Completed",
            "properties": {"total": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
            "required": ["total"],
        }
    ]
}
STRICT = {"unplanned_event": "quarantine", "unplanned_property": "quarantine"}
HEARD_WITHIN = 2.0


async def put_plan(
    admin: httpx.AsyncClient, env: harness.TestEnvironment, direction: str, **settings: str
) -> None:
    path = f"/api/environments/{env.id}/tracking-plan/{direction}"
    ok(await admin.put(path, json={"plan": PLAN, **STRICT, **settings}))


async def book(admin: httpx.AsyncClient, env: harness.TestEnvironment) -> dict[str, Any]:
    found: dict[str, Any] = ok(await admin.get(f"/api/environments/{env.id}/ledger"))
    assert_sums(found)
    return found


async def quarantined(
    admin: httpx.AsyncClient, env: harness.TestEnvironment
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(await admin.get(f"/api/environments/{env.id}/quarantine"))[
        "items"
    ]
    return items


async def stored(sessions: SessionMaker, env: harness.TestEnvironment, message_id: str) -> bool:
    async with sessions() as session:
        found = await session.scalar(
            select(Event.id).where(Event.environment_id == env.id, Event.message_id == message_id)
        )
    return found is not None


async def test_the_webhook_strips_holds_and_releases_and_the_ledger_adds_up(
    env_vars: dict[str, str],
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    sessions: SessionMaker,
    make_environment: MakeEnv,
) -> None:
    env = await make_environment("planned")
    await put_plan(admin, env, "inbound")
    extra = track("u1", "Order Completed", {"total": 10, "currency": "EUR", "debug_blob": "x"})
    mystery = track("u1", "Mystery Clicked", {"a": 1})
    segment = SegmentSender(http, env.webhook_path, mode="actions")

    for attempt in range(2):  # the second: Segment sending the same batch again
        (answer,) = await segment.send([extra, mystery])
        assert answer.status == 200, answer.body
        expected = {"stored": 1, "duplicates": 0, "rejected": [], "quarantined": 1}
        assert answer.body == (
            expected if attempt == 0 else {"stored": 0, "duplicates": 2, "rejected": []}
        )
        assert (await event(sessions, env.id, extra["messageId"])).properties == {
            "total": 10,
            "currency": "EUR",
        }
        assert not await stored(sessions, env, mystery["messageId"])
        items = await quarantined(admin, env)
        assert {i["message_id"]: (i["held"], i["message"]) for i in items} == {
            extra["messageId"]: (False, extra),
            mystery["messageId"]: (True, mystery),
        }
    assert segment.dropped == [] and segment.retries == 0
    inbound = (await book(admin, env))["inbound"]
    assert (inbound["received"], inbound["stored"], inbound["duplicates"]) == (4, 1, 2)
    assert inbound["quarantined"] == 1
    stats = await cli(env_vars, "stats", env.name)
    assert "received 4 = stored 1 + duplicates 2 + refused (" in stats.out, stats
    assert "too large 0) + quarantined 1" in stats.out, stats

    trace = f"/api/environments/{env.id}/messages/{mystery['messageId']}"
    held = ok(await admin.get(trace))
    assert held["state"] == {"inbound": "quarantined"}
    assert "held whole by the tracking plan (the event: unplanned_event)" in str(held)

    release = f"/api/environments/{env.id}/quarantine/release"
    assert ok(await admin.post(release, json={"direction": "inbound"}))["done"] == 2
    released = ok(await admin.get(trace))
    assert released["state"] == {"inbound": "stored"}
    assert [s["step"] for s in released["lifecycle"]] == ["quarantined", "released", "stored"]
    assert (await event(sessions, env.id, extra["messageId"])).properties == extra["properties"]
    assert (await event(sessions, env.id, mystery["messageId"])).properties == {"a": 1}
    assert await quarantined(admin, env) == []
    inbound = (await book(admin, env))["inbound"]
    assert (inbound["received"], inbound["stored"], inbound["duplicates"]) == (4, 2, 2)
    assert inbound["quarantined"] == 0

    (again,) = await segment.send([mystery])  # released, then redelivered: a duplicate
    assert again.status == 200 and again.body["duplicates"] == 1
    assert (await book(admin, env))["inbound"]["received"] == 5
    metrics = (await http.get("/metrics")).text
    for outcome in ("quarantined", "released"):
        assert f'integration_inbound_ledger_total{{outcome="{outcome}"}}' in metrics


async def test_a_v1_message_the_plan_does_not_fit_waits_in_quarantine_until_released(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, delivery: Delivery, sink: TimedSink
) -> None:
    env, write_key = await delivery.stream()
    # Unplanned events (the platform's own among them) go; a planned one must fit.
    await put_plan(admin, env, "outbound", unplanned_event="allow")
    fits = {"userId": "u1", "event": "Order Completed", "properties": {"total": 5}}
    fits["messageId"] = new_id("fits")
    bad = {"userId": "u1", "event": "Order Completed", "properties": {"total": "five"}}
    bad["messageId"] = new_id("bad")
    for message in (fits, bad, bad):  # the last: the library's retry
        answer = await v1(http, "/v1/track", message, key=env.source_write_key)
        assert answer.status_code == 200 and answer.json() == {"success": True}
    product = {**bad, "type": "track", "messageId": new_id("product")}  # the product's door
    answer = await admin.post(f"/api/environments/{env.id}/product-events", json=product)
    assert answer.status_code == 202, answer.text
    assert (answer.json()["accepted"], answer.json()["queued"]) == (1, 0)
    assert answer.json()["quarantined"] == 1
    (kept,) = [i for i in await quarantined(admin, env) if i["message_id"] == product["messageId"]]
    discard = f"/api/environments/{env.id}/quarantine/discard"
    assert ok(await admin.post(discard, json={"ids": [kept["id"]]}))["done"] == 1
    await delivery.deliver(env)
    assert bad["messageId"] not in sink.message_ids(write_key)
    assert fits["messageId"] in sink.message_ids(write_key)
    (held,) = await quarantined(admin, env)
    assert (held["message_id"], held["held"], held["violations"][0]["rule"]) == (
        bad["messageId"],
        True,
        "type",
    )
    outbound = (await book(admin, env))["outbound"]
    # Held, and discarded: accepted, never sent.
    assert (outbound["quarantined"], outbound["pending"]) == (2, 0)
    accepted = outbound["accepted"]  # the held message among them, once

    release = f"/api/environments/{env.id}/quarantine/release"
    assert ok(await admin.post(release, json={"ids": [held["id"]]}))["done"] == 1
    await delivery.deliver(env)
    sent = [m for m in sink.messages(write_key) if m["messageId"] == bad["messageId"]]
    assert [m["properties"] for m in sent] == [{"total": "five"}]  # once, as it was held
    outbound = (await book(admin, env))["outbound"]
    assert (outbound["quarantined"], outbound["pending"], outbound["held"]) == (1, 0, 0)
    assert outbound["accepted"] == accepted  # released: moved to the outbox, not counted again
    assert all(status == 200 for _, status in sink.answers)


async def test_a_plan_saved_in_another_process_is_in_force_within_two_seconds(
    http: httpx.AsyncClient, sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment("cached")
    first = await http.post(env.webhook_path, json=track("u1", "Before"))
    assert first.json()["stored"] == 1  # the server now remembers: no plan
    async with transaction(sessions) as session:  # this test process, not the server's
        await plans.save(
            session,
            env.id,
            "inbound",
            PLAN,
            PlanSettings(unplanned_event="quarantine"),
            created_by="test",
        )
    start = time.monotonic()
    while True:
        answer = await http.post(env.webhook_path, json=track("u1", f"After {uuid.uuid4()}"))
        assert answer.status_code == 200, answer.text
        if answer.json().get("quarantined") == 1:
            break
        assert time.monotonic() - start < HEARD_WITHIN, "the new plan is not in force"
        await asyncio.sleep(0.05)


async def test_the_console_shows_violations_and_releases_and_discards_with_csrf(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    sessions: SessionMaker,
    make_environment: MakeEnv,
    server: processes.Process,
) -> None:
    env = await make_environment("console")
    await put_plan(admin, env, "inbound")
    extra = track("u1", "Order Completed", {"total": 3, "coupon": "SPRING"})
    mystery = track("u1", "Mystery Clicked")
    assert (await http.post(env.webhook_path, json=[extra, mystery, extra])).status_code == 200
    at = f"/admin/environments/{env.id}"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        csrf = await sign_in_http(client)
        shown = (await client.get(f"{at}/plan")).text
        # By event, property and rule, with counts (the copy in the same batch counted too)
        # and the latest value at fault.
        assert (
            'Order Completed</td><td class="mono">coupon</td><td>unplanned property</td>' in shown
        )
        assert '<td>2</td><td class="mono">&#34;SPRING&#34;</td>' in shown
        assert 'Mystery Clicked</td><td class="mono"></td><td>unplanned event</td>' in shown
        live = (await client.get(f"{at}/live")).text
        assert '<span class="pill quarantined">quarantined</span>' in live
        listed = (await client.get(f"{at}/quarantine")).text
        assert extra["messageId"] in listed and mystery["messageId"] in listed
        rows = {i["message_id"]: i["id"] for i in await quarantined(admin, env)}

        forged = await client.post(
            f"{at}/quarantine/release", data={"id": rows[extra["messageId"]]}
        )
        assert forged.status_code == 403
        for action, message in (("release", extra), ("discard", mystery)):
            done = await client.post(
                f"{at}/quarantine/{action}", data={"csrf": csrf, "id": rows[message["messageId"]]}
            )
            assert done.status_code == 303, done.text
    assert (await event(sessions, env.id, extra["messageId"])).properties == extra["properties"]
    assert not await stored(sessions, env, mystery["messageId"])
    assert await quarantined(admin, env) == []
    inbound = (await book(admin, env))["inbound"]
    assert (inbound["received"], inbound["stored"], inbound["quarantined"]) == (3, 1, 1)


async def test_requests_sharing_a_transaction_quarantine_a_message_once(
    admin: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, make_environment: MakeEnv
) -> None:
    """Two requests with the same held message, written by the group commit in one
    transaction: the first quarantines it, the second is a duplicate; the other environment
    of the transaction, without a plan, stores as ever."""
    env, other = await make_environment("shared"), await make_environment("planless")
    await put_plan(admin, env, "inbound")
    plan = await PlanCache(engine).plan(env.id, "inbound")
    held = validate([track("u1", "Mystery Clicked")]).messages
    commit = GroupCommit(engine, InstallKey.of(settings), writers=1)
    commit.start()
    try:
        answers = await asyncio.gather(
            commit.submit(Target(env.id, "company_id", plan=plan), held),
            commit.submit(Target(env.id, "company_id", plan=plan), held),
            commit.submit(Target(other.id, "company_id"), held),
        )
    finally:
        await commit.stop()
    assert [(a.stored, a.duplicates, a.quarantined) for a in answers] == [
        (0, 0, 1),
        (0, 1, 0),
        (1, 0, 0),
    ]
    inbound = (await book(admin, env))["inbound"]
    assert (inbound["received"], inbound["duplicates"], inbound["quarantined"]) == (2, 1, 1)


async def test_a_held_first_event_still_unmasks_a_replayed_signature(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    """An Actions batch is signed over its first event only: one whose signed first event was
    held in quarantine is as known as a stored one, so a captured signature replayed with a new
    tail stores nothing new."""
    secret = "whsec-plans-signature"
    env = await make_environment("signed", webhook_signing_secret=secret)
    await put_plan(admin, env, "inbound")
    segment = SegmentSender(http, env.webhook_path, mode="actions", secret=secret)
    captured = track("u1", "Mystery Clicked")
    (first,) = await segment.send([captured])
    assert first.body["quarantined"] == 1
    forged = track("u1", "Order Completed", {"total": 1})
    (replayed,) = await segment.send([captured, forged])
    assert replayed.status == 200, replayed.body
    assert [r["error"] for r in replayed.body["rejected"]] == ["replayed_signature"]
    assert (replayed.body["stored"], replayed.body["duplicates"]) == (0, 1)


async def test_an_erased_persons_held_message_redelivered_stays_erased(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment("erased")
    await put_plan(admin, env, "inbound")
    segment = SegmentSender(http, env.webhook_path, mode="actions")
    theirs = [track("gone", "Mystery Clicked"), track("gone", "Order Completed", {"total": 1})]
    (first,) = await segment.send(theirs)
    assert (first.body["stored"], first.body["quarantined"]) == (1, 1)
    erased = ok(await admin.delete(f"/api/environments/{env.id}/users/gone"))
    assert erased["deleted"]["quarantine"] == 1
    (again,) = await segment.send(theirs)  # Segment's redelivery, after the erasure
    assert again.status == 200 and again.body["duplicates"] == 2, again.body
    assert await quarantined(admin, env) == []
