"""Mappings (#24) in the one pipeline, end to end: the real server process over HTTP, the
delivery worker and a Segment-like sink (outbound), a Segment-like webhook sender (inbound).

Outbound, a staging mapping changes what Segment gets from staging alone, through every door
(product events, the /v1 intake), until it is promoted; a preview shows what is then sent, to
the byte. Inbound, a mapping shapes what is stored (a property as a user trait, the company
from context.groupId). A mapping that fails on a message leaves that message stored or sent
unmapped, with the error in the trace, the deliveries and the ledger, and Segment answered 2xx
throughout. A change is in force in another API process within 2 s."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from itertools import count
from typing import Any

import httpx
import orjson

from integration import LIBRARY_NAME, __version__
from integration.environments import mappings as mappings_service
from integration.environments import service as environments
from integration.environments.current_mappings import CurrentMappings, in_session
from integration.environments.mappings import Mapped
from integration.store.db import SessionMaker, transaction
from integration.store.models import MappingVersion
from tests import harness, processes
from tests.admin_support import create_environment, error, ok
from tests.conftest import wait_for
from tests.intake_support import post as intake_post
from tests.outbound_support import Delivery, TimedSink, cli
from tests.segment_sender import SegmentSender
from tests.test_key_cache import listening

MakeEnv = Callable[..., Awaitable[harness.TestEnvironment]]

SIGNED_UP = 'type = "track" and event = "Signed Up"'
# Rename the event, reshape its properties, set context.traits.
RESHAPE = {
    "event": {"@template": "Account {{event}}"},
    "properties": {
        "plan": {"@case": {"operator": "upper", "value": {"@path": "$.properties.plan"}}},
        "seats": {"@path": "$.properties.seats"},
    },
    "context": {
        "@merge": {
            "direction": "right",
            "objects": [
                {"@path": "$.context"},
                {"traits": {"plan": {"@path": "$.properties.plan"}}},
            ],
        }
    },
}
# A property as a user trait, the company from context.groupId; and a userId taken from a
# property, which makes the message invalid (so unmapped) where that property is an object.
PROFILE = {
    "traits": {
        "@merge": {
            "direction": "right",
            "objects": [{"@path": "$.traits"}, {"plan": {"@path": "$.properties.plan_name"}}],
        }
    },
    "groupId": {"@path": "$.context.groupId"},
    "userId": {"@path": "$.properties.owner"},
}


def mappings(env_id: uuid.UUID, direction: str, tail: str = "") -> str:
    return f"/api/environments/{env_id}/mappings/{direction}{tail}"


async def put_mapping(
    admin: httpx.AsyncClient,
    env: harness.TestEnvironment,
    direction: str,
    mapping: dict[str, Any],
    trigger: str | None = None,
) -> None:
    body = {"trigger": trigger, "mapping": mapping}
    ok(await admin.put(mappings(env.id, direction), json=body))


def signed_up(message_id: str) -> dict[str, Any]:
    """A product event as publish() makes it ready (so a preview of it shows what is sent)."""
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "u-1",
        "event": "Signed Up",
        "timestamp": "2026-12-07T12:00:00.000Z",
        "properties": {"plan": "pro", "seats": 3, "coupon": "WINTER"},
        "context": {"library": {"name": LIBRARY_NAME, "version": __version__}},
    }


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


async def trace(admin: httpx.AsyncClient, env: harness.TestEnvironment, message_id: str) -> Any:
    return ok(await admin.get(f"/api/environments/{env.id}/messages/{message_id}"))


async def ledger(admin: httpx.AsyncClient, env: harness.TestEnvironment) -> Any:
    return ok(await admin.get(f"/api/environments/{env.id}/ledger"))


async def test_a_staging_mapping_changes_what_segment_gets_from_staging_only_until_promoted(
    delivery: Delivery, admin: httpx.AsyncClient, http: httpx.AsyncClient, sink: TimedSink
) -> None:
    staging, staging_key = await delivery.stream()
    production, production_key = await delivery.stream()
    await put_mapping(admin, staging, "outbound", RESHAPE, SIGNED_UP)
    run = uuid.uuid4().hex[:8]
    first = signed_up(f"{run}-staging")
    previewed = ok(
        await admin.post(mappings(staging.id, "outbound", "/preview"), json={"message": first})
    )

    other = {"type": "track", "messageId": f"{run}-other", "userId": "u-1", "event": "Clicked"}
    await delivery.publish(staging, [first, other])
    await delivery.publish(production, signed_up(f"{run}-production"))
    through_intake = {"userId": "u-2", "event": "Signed Up", "properties": {"plan": "team"}}
    answer = await intake_post(
        http,
        "/v1/batch",
        {"batch": [{"type": "track", "messageId": f"{run}-intake", **through_intake}]},
        key=staging.source_write_key,
    )
    assert answer.status_code == 200, answer.text
    await delivery.deliver(staging)
    await delivery.deliver(production)

    sent = {m["messageId"]: m for m in sink.messages(staging_key)}
    mapped = sent[f"{run}-staging"]
    assert mapped["event"] == "Account Signed Up"
    assert mapped["properties"] == {"plan": "PRO", "seats": 3}
    assert mapped["context"]["traits"] == {"plan": "pro"}
    for field in ("type", "messageId", "userId", "event", "properties", "context", "timestamp"):
        # Byte for byte, keys sorted: the outbox keeps payloads as jsonb, which orders keys.
        assert canonical(mapped[field]) == canonical(previewed["message"][field]), field
    assert sent[f"{run}-other"]["event"] == "Clicked"  # the trigger did not select it
    assert sent[f"{run}-intake"]["event"] == "Account Signed Up"  # every outbound door
    assert sent[f"{run}-intake"]["properties"] == {"plan": "TEAM"}
    unchanged = {m["messageId"]: m for m in sink.messages(production_key)}[f"{run}-production"]
    assert unchanged["event"] == "Signed Up"
    assert unchanged["properties"] == signed_up("")["properties"]

    promote = mappings(staging.id, "outbound", "/promote")
    ok(await admin.post(promote, params={"to": production.name}))
    await delivery.publish(production, signed_up(f"{run}-promoted"))
    await delivery.deliver(production)
    promoted = {m["messageId"]: m for m in sink.messages(production_key)}[f"{run}-promoted"]
    assert promoted["event"] == "Account Signed Up"
    assert (await ledger(admin, staging))["outbound"]["mapping_failed"] == 0


async def test_a_failing_outbound_mapping_sends_the_message_unmapped_with_the_error(
    delivery: Delivery, admin: httpx.AsyncClient, http: httpx.AsyncClient, sink: TimedSink
) -> None:
    env, write_key = await delivery.stream()
    await put_mapping(admin, env, "outbound", {"userId": {"@path": "$.properties.owner"}})
    run = uuid.uuid4().hex[:8]
    failing = {
        "type": "track",
        "messageId": f"{run}-failing",
        "userId": "u-1",
        "event": "Shared",
        "properties": {"owner": {"id": 7}},
    }
    fine = {**failing, "messageId": f"{run}-fine", "properties": {"owner": "u-9"}}
    await delivery.publish(env, [failing, fine])
    await delivery.deliver(env)

    sent = {m["messageId"]: m for m in sink.messages(write_key)}
    assert sent[f"{run}-failing"]["userId"] == "u-1"  # sent, unmapped
    assert sent[f"{run}-fine"]["userId"] == "u-9"
    error_text = "mapping: the mapped message is not valid: userId must be a string"
    rows = ok(await admin.get(f"/api/environments/{env.id}/deliveries"))["items"]
    by_id = {r["message_id"]: r for r in rows}
    assert by_id[f"{run}-failing"]["mapping_error"] == error_text
    assert by_id[f"{run}-fine"]["mapping_error"] is None
    accepted = (await trace(admin, env, f"{run}-failing"))["lifecycle"][0]
    assert accepted["mapping_error"] == f"accepted unmapped: {error_text}"
    book = (await ledger(admin, env))["outbound"]
    assert book["mapping_failed"] == 1
    assert book["accepted"] == book["delivered"] + book["pending"] + book["held"]
    metrics = (await http.get("/metrics")).text
    assert 'integration_mapping_failed_total{direction="outbound"}' in metrics


async def test_an_inbound_mapping_shapes_what_is_stored_and_a_failure_is_stored_unmapped(
    make_environment: MakeEnv,
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    env_vars: dict[str, str],
) -> None:
    env = await make_environment("in")
    await put_mapping(admin, env, "inbound", PROFILE, 'type = "track" or type = "identify"')
    run = uuid.uuid4().hex[:8]
    batch = [
        {
            "type": "track",
            "messageId": f"{run}-plan",
            "userId": f"ann-{run}",
            "event": "Plan Chosen",
            "properties": {"plan_name": "pro"},
        },
        {
            "type": "identify",
            "messageId": f"{run}-company",
            "userId": f"bob-{run}",
            "traits": {"email": "bob@example.com"},
            "context": {"groupId": f"acme-{run}"},
        },
        {
            "type": "track",
            "messageId": f"{run}-failing",
            "userId": f"cy-{run}",
            "event": "Shared",
            "properties": {"owner": {"id": 7}},
        },
    ]
    segment = SegmentSender(http, env.webhook_path)
    [first] = await segment.send(batch)
    [again] = await segment.send(batch)  # Segment's redelivery: acknowledged, counted once
    assert (first.status, again.status) == (200, 200), (first.body, again.body)
    assert (first.body["stored"], again.body["duplicates"]) == (3, 3)

    users = f"/api/environments/{env.id}/users"
    assert ok(await admin.get(f"{users}/ann-{run}"))["traits"] == {"plan": "pro"}
    bob = ok(await admin.get(f"{users}/bob-{run}"))
    assert bob["traits"] == {"email": "bob@example.com"}
    assert [c["group_id"] for c in bob["companies"]] == [f"acme-{run}"]

    cy = ok(await admin.get(f"{users}/cy-{run}"))  # stored as it came, under its own userId
    [stored] = cy["recent_events"]
    error_text = "mapping: the mapped message is not valid: userId must be a string"
    assert (stored["properties"], stored["mapping_error"]) == ({"owner": {"id": 7}}, error_text)
    step = (await trace(admin, env, f"{run}-failing"))["lifecycle"][0]
    assert step["mapping_error"] == f"stored unmapped: {error_text}"
    shown = await cli(env_vars, "messages", "show", env.name, f"{run}-failing")
    assert f"stored unmapped: {error_text}" in shown.out, shown
    book = (await ledger(admin, env))["inbound"]
    assert (book["stored"], book["duplicates"], book["mapping_failed"]) == (3, 3, 1)
    metrics = (await http.get("/metrics")).text
    assert 'integration_mapping_failed_total{direction="inbound"}' in metrics


async def test_a_mapping_may_not_set_what_identifies_a_message(admin: httpx.AsyncClient) -> None:
    env = await create_environment(admin)
    for direction, key in (
        ("outbound", "messageId"),
        ("outbound", "type"),
        ("inbound", "receivedAt"),
    ):
        body = {"trigger": None, "mapping": {key: "x", "event": "y"}}
        refused = error(
            await admin.put(f"/api/environments/{env['id']}/mappings/{direction}", json=body), 422
        )
        assert refused["field"] == f"mapping.{key}", refused
    allowed = {"trigger": None, "mapping": {"receivedAt": {"@path": "$.timestamp"}}}
    ok(await admin.put(f"/api/environments/{env['id']}/mappings/outbound", json=allowed))


async def test_a_change_is_in_force_in_another_api_process_within_2_seconds(
    make_environment: MakeEnv,
    admin: httpx.AsyncClient,
    sessions: SessionMaker,
    env_vars: dict[str, str],
) -> None:
    env = await make_environment("in")
    other = await asyncio.to_thread(processes.serve, env_vars)
    try:
        await listening(other, 1)  # its cache is trusted: it remembers, so it must forget
        async with httpx.AsyncClient(base_url=other.url, timeout=10) as there:
            segment = SegmentSender(there, env.webhook_path, attempts=1)
            run = uuid.uuid4().hex[:8]
            probes = count()

            async def stored_as(name: str) -> bool:
                message_id = f"{run}-{next(probes)}"
                message = {"type": "track", "messageId": message_id, "userId": "u", "event": "Hi"}
                [answer] = await segment.send([message])
                assert answer.status == 200, answer.body
                return bool((await trace(admin, env, message_id))["lifecycle"][0]["event"] == name)

            assert await stored_as("Hi")  # remembered there: no mapping
            # Through the admin API of the shared server: announced after its commit.
            await put_mapping(admin, env, "inbound", {"event": {"@template": "Mapped {{event}}"}})
            await in_force_within(2.0, partial(stored_as, "Mapped Hi"))
            # With SQL, announced by no one: the other process's fingerprint of the table finds it.
            async with transaction(sessions) as session:
                session.add(
                    MappingVersion(
                        environment_id=env.id,
                        direction="inbound",
                        version=2,
                        trigger=None,
                        mapping={"event": {"@template": "Again {{event}}"}},
                        created_by="psql",
                    )
                )
            await in_force_within(2.0, partial(stored_as, "Again Hi"))
    finally:
        await asyncio.to_thread(other.stop)


async def in_force_within(seconds: float, seen: Callable[[], Awaitable[bool]]) -> None:
    changed = time.monotonic()
    await wait_for(seen, timeout=seconds, interval=0.05)
    assert time.monotonic() - changed < seconds


async def test_each_version_is_compiled_once_per_process(
    make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    """Without a listener (a worker, the command line) each batch reads the current version,
    and a version already compiled is not compiled again."""
    env = await make_environment("in")
    cache = CurrentMappings()
    async with transaction(sessions) as session:
        assert await cache.get(env.id, "outbound", in_session(session)) is None
        environment = await environments.get(session, str(env.id))
        await mappings_service.change(
            session, environment, "outbound", trigger=None, mapping={"event": "Renamed"}
        )
    async with sessions() as session:
        first = await cache.get(env.id, "outbound", in_session(session))
        assert first is not None and first is await cache.get(
            env.id, "outbound", in_session(session)
        )
        now = datetime.now(UTC)
        assert (
            first.apply({"type": "track", "event": "x", "userId": "u"}, now=now).message["event"]
            == "Renamed"
        )
    # A stored version the rules now refuse (written with SQL): every message goes on unmapped,
    # naming why; a GDPR delete is never mapped.
    async with transaction(sessions) as session:
        session.add(
            MappingVersion(
                environment_id=env.id,
                direction="outbound",
                version=2,
                trigger=None,
                mapping={"messageId": "same-for-all"},
                created_by="psql",
            )
        )
    async with sessions() as session:
        broken = await cache.get(env.id, "outbound", in_session(session))
    assert broken is not None and broken.version == 2
    track = {"type": "track", "event": "x", "userId": "u"}
    assert broken.apply(track, now=now) == Mapped(
        track,
        matched=True,
        error="version 2: mapping.messageId: a mapping cannot set messageId (the message keeps"
        " its own)",
    )
    assert broken.apply({"type": "delete", "userId": "u"}, now=now).matched is False
