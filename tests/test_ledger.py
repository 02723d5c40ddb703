"""The ledger, the trace and replay by filter (#23.1-3), end to end: the real API server, the
delivery worker and a Segment-like sink. After a mixed run (duplicates, a bad signature, an
invalid and an oversized message, a dead batch, a stream switched off and on, a replay) the
ledger adds up exactly, every messageId has a trace ending in one final state, and a dry run
counts exactly what the real replay then delivers."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from sqlalchemy import func, select, text

from integration.store import activity
from integration.store.db import SessionMaker
from integration.store.models import ActivityCount, DeliveryAttempt, Replay
from tests import harness
from tests.conftest import wait_for
from tests.console_support import sign_in_http
from tests.outbound_support import (
    Delivery,
    TimedSink,
    cli,
    statuses,
    track,
)
from tests.segment_payloads import MakeEnv

SECRET = "whsec-ledger-test"


def signed(body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
    }


async def post(
    http: httpx.AsyncClient, env: harness.TestEnvironment, messages: Any
) -> httpx.Response:
    body = orjson.dumps(messages)
    return await http.post(env.webhook_path, content=body, headers=signed(body))


def identify(message_id: str, user: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "userId": user, "traits": {"plan": "pro"}}


async def ledger(admin: httpx.AsyncClient, env: harness.TestEnvironment, **params: str) -> Any:
    answer = await admin.get(f"/api/environments/{env.id}/ledger", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def trace(admin: httpx.AsyncClient, env: harness.TestEnvironment, message_id: str) -> Any:
    return await admin.get(f"/api/environments/{env.id}/messages/{message_id}")


def assert_sums(book: dict[str, Any]) -> None:
    i, o = book["inbound"], book["outbound"]
    refused = sum(i["refused"].values())
    assert i["received"] == i["stored"] + i["duplicates"] + refused + i["quarantined"], i
    dead = sum(o["dead"].values())
    assert o["accepted"] == o["delivered"] + o["pending"] + o["held"] + dead + o["quarantined"], o
    assert min(i["stored"], i["quarantined"], o["delivered"], o["quarantined"]) >= 0, book


async def test_a_mixed_run_adds_up_and_every_message_has_a_final_trace(
    delivery: Delivery,
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    sink: TimedSink,
    sessions: SessionMaker,
    env_vars: dict[str, str],
) -> None:
    env, write_key = await delivery.stream(webhook_signing_secret=SECRET)
    run = uuid.uuid4().hex[:8]
    # --- inbound: 3 stored, 1 duplicate, 1 bad signature, 1 invalid, 1 too large, and a
    # request with an unknown key, which names no environment.
    ids = [f"in-{run}-{i}" for i in range(4)]
    first = await post(http, env, [identify(ids[0], "ann"), identify(ids[1], "bob")])
    assert first.json()["stored"] == 2
    group = {
        "type": "group",
        "messageId": ids[2],
        "userId": "ann",
        "groupId": "acme",
        "traits": {"name": "Acme"},
    }
    assert (await post(http, env, group)).json()["stored"] == 1
    again = await post(http, env, identify(ids[0], "ann"))
    assert again.json() == {"stored": 0, "duplicates": 1, "rejected": []}
    forged = await http.post(
        env.webhook_path, json=identify("forged", "eve"), headers={"x-signature": "00"}
    )
    assert forged.status_code == 401
    big = identify(f"big-{run}", "ann") | {"traits": {"blob": "x" * 40_000}}
    mixed = await post(http, env, [identify(ids[3], "cy"), {"type": "track"}, big])
    assert mixed.json()["stored"] == 1 and len(mixed.json()["rejected"]) == 2
    unknown = await http.post("/webhooks/segment/not-a-key", json=identify("x", "y"))
    assert unknown.status_code == 401

    book = await ledger(admin, env, direction="inbound")
    assert book["inbound"] | {"note": ""} == {
        "received": 8,
        "stored": 4,
        "duplicates": 1,
        "refused": {"bad_signature": 1, "invalid": 1, "too_large": 1},
        "blocked_ids": 0,
        "mapping_failed": 0,  # no mapping: outside the sums either way
        "quarantined": 0,
        "note": "",
    }
    assert "outbound" not in book
    metrics = (await http.get("/metrics")).text
    for outcome in ("stored", "duplicate", "refused_bad_key", "refused_bad_signature"):
        assert f'integration_inbound_ledger_total{{outcome="{outcome}"}}' in metrics

    # --- outbound: a batch Segment refuses (dead, 400: with it the platform's own "Segment
    # Stream Enabled" of the environment's creation), a message over Segment's limit (dead
    # on arrival), and two held while the stream is off.
    refused = [track(i, run=run, message_id=f"dead-{run}-{i}") for i in range(3)]
    sink.fail(400)
    dead_ids = await delivery.publish(env, refused)
    async with delivery.worker():
        await wait_for(lambda: _only(statuses(sessions, env.id), "dead"))
    held = [track(i, run=run, message_id=f"held-{run}-{i}") for i in range(2)]
    held_ids = await delivery.publish(env, held)
    oversized = track(9, run=run, message_id=f"huge-{run}", properties={"x": "y" * 40_000})
    await admin.post(f"/api/environments/{env.id}/product-events", json=oversized)
    switched = await admin.patch(f"/api/environments/{env.id}", json={"stream_enabled": False})
    assert switched.status_code == 200, switched.text

    book = await ledger(admin, env)
    assert book["outbound"] == {
        "accepted": 7,
        "delivered": 0,
        "pending": 0,
        "held": 2,
        "dead": {"400": 4, "too_large": 1},
        "mapping_failed": 0,
        "quarantined": 0,
    }
    assert_sums(book)
    on = await admin.patch(f"/api/environments/{env.id}", json={"stream_enabled": True})
    assert on.status_code == 200

    # --- replay: the dry run counts and changes nothing; the real one queues the same rows
    # (the oversized one stays dead); no worker runs meanwhile, so the one started after
    # finds them in Postgres.
    replay = f"/api/environments/{env.id}/deliveries/replay"
    dry = (await admin.post(replay, json={"status": "dead", "dry_run": True})).json()
    assert dry["dry_run"] and dry["queued"] == 4 and dry["replayed"] == 0
    assert {s["message_id"] for s in dry["sample"]} >= set(dead_ids)
    assert (await statuses(sessions, env.id))["dead"] == 5  # nothing changed
    real = (await admin.post(replay, json={"status": "dead"})).json()
    assert real["queued"] == real["replayed"] == dry["queued"] and not real["more"]
    async with delivery.worker():
        await wait_for(lambda: len(set(sink.message_ids(write_key))) == 7)
        await wait_for(lambda: _counted(statuses(sessions, env.id), delivered=7, dead=1))
    assert sorted(sink.product_ids(write_key)) == sorted(dead_ids + held_ids)
    replayed = {s["message_id"] for s in dry["sample"]}
    assert len([m for m in sink.message_ids(write_key) if m in replayed]) == dry["queued"]

    book = await ledger(admin, env)
    assert book["outbound"] == {
        "accepted": 8,  # and the platform's "Segment Stream Enabled" of the switch back on
        "delivered": 7,
        "pending": 0,
        "held": 0,
        "dead": {"too_large": 1},
        "mapping_failed": 0,
        "quarantined": 0,
    }
    assert book["inbound"]["received"] == 8
    assert_sums(book)
    async with sessions() as session:
        [record] = await session.scalars(select(Replay).where(Replay.environment_id == env.id))
    assert (record.actor, record.queued, record.filter) == (
        "admin API (ADMIN_TOKEN)",
        4,
        {"status": "dead"},
    )

    # --- traces: each ends in one final state, its steps oldest first.
    for message_id in ids:
        found = (await trace(admin, env, message_id)).json()
        assert found["state"] == {"inbound": "stored"}
    redelivered = (await trace(admin, env, ids[0])).json()["lifecycle"]
    assert [s["step"] for s in redelivered] == ["stored", "redelivered"]
    assert redelivered[1]["times"] == 1
    changed = (await trace(admin, env, ids[2])).json()["lifecycle"][0]["changed"]
    assert changed["company"]["group_id"] == "acme"
    assert changed["membership"] == {"user_id": "ann", "group_id": "acme"}
    for message_id in dead_ids:
        found = (await trace(admin, env, message_id)).json()
        assert found["state"] == {"outbound": "delivered"}
        steps = [(s["step"], s.get("segment_status")) for s in found["lifecycle"]]
        assert steps == [
            ("accepted", None),
            ("dead", 400),
            ("replayed", None),
            ("delivered", 200),
        ]
        times = [s["at"] for s in found["lifecycle"]]
        assert times == sorted(times)
    shown = await cli(env_vars, "messages", "show", env.name, dead_ids[1])
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    assert lines[0] == f"{dead_ids[1]} in {env.name}: outbound delivered"
    assert "outbound accepted for Segment (track Flow Started)" in lines[1]
    assert "outbound dead Segment answered 400: Segment refused the batch: HTTP 400" in lines[2]
    assert "outbound replayed: replayed by admin API (ADMIN_TOKEN)" in lines[3]
    assert "outbound delivered Segment answered 200" in lines[4]
    stats = await cli(env_vars, "stats", env.name)
    assert "  inbound   received 8 = stored 4 + duplicates 1 + refused (bad signature 1," in (
        stats.out
    ), stats
    assert "  outbound  accepted 8 = delivered 7 + pending 0 + held 0 + dead (too_large 1)" in (
        stats.out
    ), stats
    dry_cli = await cli(
        env_vars,
        "deliveries",
        "replay",
        env.name,
        "--status",
        "delivered",
        "--user-id",
        "user-1",
        "--dry-run",
    )
    assert dry_cli.code == 0 and "dry run: would replay 2 delivered deliveries" in dry_cli.out, (
        dry_cli
    )
    for message_id in held_ids:
        found = (await trace(admin, env, message_id)).json()
        assert [s["step"] for s in found["lifecycle"]] == ["accepted", "delivered"]
    huge = (await trace(admin, env, f"huge-{run}")).json()
    assert huge["state"] == {"outbound": "dead"}
    assert "Segment accepts at most" in huge["lifecycle"][-1]["detail"]
    # Refused and never-sent messages are not held anywhere.
    assert (await trace(admin, env, "forged")).status_code == 404

    # --- an erased person's messages answer 404, their attempts gone with them.
    erased = await admin.delete(f"/api/environments/{env.id}/users/user-0")
    assert erased.status_code == 200, erased.text
    gone = [m for m in dead_ids + held_ids if m.endswith("-0")]
    for message_id in gone:
        answer = await trace(admin, env, message_id)
        assert answer.status_code == 404
        assert "user-0" not in answer.text
    async with sessions() as session:
        attempts = await session.scalar(
            select(func.count()).where(DeliveryAttempt.environment_id == env.id)
        )
    # The others' attempts remain: 2 replayed (3 each) and 1 held (1); the platform's 2.
    assert attempts == 2 * 3 + 1 + 3 + 1
    assert_sums(await ledger(admin, env))


async def _counted(counts: Any, **expected: int) -> bool:
    return dict(await counts) == expected


async def _only(counts: Any, status: str) -> bool:
    return set(await counts) == {status}


async def test_the_console_shows_the_ledger_traces_and_replays_after_a_dry_run(
    server: Any, delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    run = uuid.uuid4().hex[:8]
    sink.fail(400)
    ids = await delivery.publish(
        env, [track(i, run=run, message_id=f"c-{run}-{i}", event=f"E{i % 2}") for i in range(4)]
    )
    async with delivery.worker():
        await wait_for(lambda: _only(statuses(sessions, env.id), "dead"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as console:
        csrf = await sign_in_http(console)
        at = f"/admin/environments/{env.id}"
        overview = (await console.get(f"{at}/deliveries")).text
        # 4 and the platform's "Segment Stream Enabled", all in the refused batch.
        assert 'id="ledger-accepted">5<' in overview
        assert "dead 400 5" in overview

        shown = await console.get(f"{at}/trace", params={"message_id": ids[0]})
        assert shown.status_code == 200 and "Segment refused the batch: HTTP 400" in shown.text
        missing = await console.get(f"{at}/trace", params={"message_id": "nope"})
        assert missing.status_code == 404

        # A dry run of event E1: the count and a sample, nothing changed; then exactly that.
        filtered = {"csrf": csrf, "status": "dead", "event": "E1"}
        dry = await console.post(f"{at}/deliveries/replay-filter", data=filtered | {"dry_run": "1"})
        assert dry.status_code == 200, dry.text
        assert "Dry run: 2 dead deliveries would be queued again" in dry.text
        assert ids[1] in dry.text and ids[3] in dry.text and ids[0] not in dry.text
        assert (await statuses(sessions, env.id))["dead"] == 5
        real = await console.post(f"{at}/deliveries/replay-filter", data=filtered)
        assert real.status_code == 303
        async with delivery.worker():
            await wait_for(lambda: len(sink.message_ids(key)) == 2)
        assert sorted(sink.message_ids(key)) == sorted([ids[1], ids[3]])
        replays = (await console.get(f"{at}/deliveries")).text
        record_row = replays.split('id="replays"')[1].split("</table>")[0]
        assert "console" in record_row
        assert "status=dead" in record_row and "event=E1" in record_row
        assert "2 of 2" in record_row
    async with sessions() as session:
        [record] = await session.scalars(select(Replay).where(Replay.environment_id == env.id))
    assert (record.actor, record.queued, record.filter) == (
        "console",
        2,
        {"status": "dead", "event": "E1"},
    )


async def test_a_delivered_message_is_re_sent_with_its_messageid_by_user(
    delivery: Delivery,
    admin: httpx.AsyncClient,
    sink: TimedSink,
    sessions: SessionMaker,
    env_vars: dict[str, str],
) -> None:
    env, key = await delivery.stream()
    run = uuid.uuid4().hex[:8]
    ids = await delivery.publish(
        env, [track(i, run=run, message_id=f"r-{run}-{i}") for i in range(3)]
    )
    async with delivery.worker():
        await wait_for(lambda: _only(statuses(sessions, env.id), "delivered"))
        replay = f"/api/environments/{env.id}/deliveries/replay"
        asked = {"status": "delivered", "user_id": "user-1"}
        dry = (await admin.post(replay, json=asked | {"dry_run": True})).json()
        assert (dry["queued"], dry["matched"], dry["more"]) == (1, 1, False)
        assert [s["message_id"] for s in dry["sample"]] == [ids[1]]
        done = (await admin.post(replay, json=asked)).json()
        assert done["replayed"] == dry["queued"]
        await wait_for(lambda: sink.message_ids(key).count(ids[1]) == 2)
    assert sorted(sink.product_ids(key)) == sorted([*ids, ids[1]])
    erased = await admin.delete(f"/api/environments/{env.id}/users/user-1")
    assert erased.status_code == 200
    async with sessions() as session:
        filters = list(
            await session.scalars(select(Replay.filter).where(Replay.environment_id == env.id))
        )
    assert filters == [{"status": "delivered", "user_id": "(erased)"}]
    # The record, as the API and the command line list it (the dry run changed nothing).
    listed = await admin.get(f"/api/environments/{env.id}/replays")
    assert listed.status_code == 200, listed.text
    [record] = listed.json()["items"]
    assert record["actor"] == "admin API (ADMIN_TOKEN)"
    assert (record["queued"], record["matched"]) == (1, 1)
    assert record["filter"] == {"status": "delivered", "user_id": "(erased)"}
    printed = await cli(env_vars, "deliveries", "replays", env.name)
    assert printed.code == 0, printed.out
    assert "admin API (ADMIN_TOKEN)  queued 1 of 1  status=delivered, user_id=(erased)" in (
        printed.out
    )
    bad = await admin.post(replay, json={"status": "pending"})
    assert bad.status_code == 400 and bad.json()["field"] == "status"
    book = await ledger(admin, env, direction="outbound")
    assert book["outbound"]["delivered"] == book["outbound"]["accepted"]


async def test_old_minutes_fold_into_days_and_the_window_still_sums(
    admin: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment("fold")
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                """INSERT INTO activity_counts (environment_id, bucket, slot, received, stored,
                       duplicates, refused_invalid, accepted)
                   SELECT :env, date_trunc('day', now() - interval '5 days') + m, s, 3, 1, 1, 1, 2
                   FROM (VALUES (interval '1 minute', 0), (interval '2 hours', 3)) AS v(m, s)"""
            ),
            {"env": env.id},
        )
    since = (datetime.now(UTC) - timedelta(days=6)).isoformat()
    before = await ledger(admin, env, **{"from": since})
    await activity.fold(sessions)
    async with sessions() as session:
        slots = list(
            await session.scalars(
                select(ActivityCount.slot).where(ActivityCount.environment_id == env.id)
            )
        )
    assert slots == [-1]  # one row for the day
    after = await ledger(admin, env, **{"from": since})
    assert after == before
    assert after["inbound"]["received"] == 6 and after["outbound"]["accepted"] == 4
    assert_sums(after)


async def test_a_messageid_with_slashes_has_a_trace(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    # Senders choose their messageIds; some are URLs or paths.
    env = await make_environment("slashes", webhook_signing_secret=SECRET)
    message_id = f"https://example.com/orders/{uuid.uuid4().hex}/created"
    assert (await post(http, env, identify(message_id, "ann"))).json()["stored"] == 1
    encoded = quote(message_id, safe="")
    found = await admin.get(f"/api/environments/{env.id}/messages/{encoded}")
    assert found.status_code == 200, found.text
    assert found.json()["message_id"] == message_id
    assert found.json()["state"] == {"inbound": "stored"}
    other = await admin.get(
        f"/api/environments/{env.id}/messages/{quote(message_id + '/x', safe='')}"
    )
    assert other.status_code == 404
