"""The services on their own, without HTTP: what each decides, called as the routes and the CLI
call them, against the real database."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.crypto import SecretBox
from integration.environments import service as environments
from integration.errors import BadRequest, Conflict, NotFound, Unauthorized
from integration.inbound import erasure, queries
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import GroupCommit
from integration.inbound.service import Inbound
from integration.outbound import events, outbox
from integration.outbound.publish import publish
from integration.spec import MAX_MESSAGE_BYTES
from integration.store.db import SessionMaker, driver_transaction, transaction
from integration.store.models import Deletion, OutboxMessage
from tests.admin_support import previous_key_hashes
from tests.harness import Body
from tests.segment_payloads import Env, MakeEnv, identify, new_id, track

SECRET = "service-signing-secret"


@pytest.fixture
async def inbound(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Inbound]:
    commit = GroupCommit(engine, InstallKey.of(settings), writers=1)
    commit.start()
    yield Inbound(engine, SecretBox.of(settings), commit, settings)
    await commit.stop()


# --- inbound.service: authenticate, then read, then validate, then store ---------------------


async def test_an_unknown_key_is_refused_before_the_body_is_read(inbound: Inbound) -> None:
    body = Body(b"not even json")
    with pytest.raises(Unauthorized) as refused:
        await inbound.receive(
            "no-such-key", client="198.51.100.7", given_signature=None, read_body=body
        )
    assert refused.value.error == "unknown_webhook_key"
    assert body.reads == 0


async def test_a_bad_signature_is_refused_before_any_message_is_parsed(
    inbound: Inbound, make_environment: MakeEnv
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    body = Body(b"[{ this is not json")
    with pytest.raises(Unauthorized) as refused:
        await inbound.receive(env.key, client="c", given_signature="00" * 20, read_body=body)
    assert refused.value.error == "invalid_signature"
    assert body.reads == 1


async def test_a_batch_signed_over_its_first_event_is_stored(
    inbound: Inbound, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    user_id = new_id("user")
    first, second = identify(user_id, {"plan": "pro"}), track(user_id, "Clicked")
    raw = b"[" + orjson.dumps(first) + b"," + orjson.dumps(second) + b"]"
    signature = hmac.new(SECRET.encode(), orjson.dumps(first), hashlib.sha1).hexdigest()

    received = await inbound.receive(
        env.key, client="c", given_signature=signature, read_body=Body(raw)
    )

    assert received.as_dict() == {"stored": 2, "duplicates": 0, "rejected": []}
    async with sessions() as session:
        detail = await queries.user_detail(session, env.id, user_id)
    assert detail.user.traits == {"plan": "pro"}
    assert [e.message_id for e in detail.recent_events] == [second["messageId"], first["messageId"]]


# --- environments.service and outbound.events (the one door for changes) ------------------------


async def test_settings_are_checked_by_the_service_itself(
    sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    box = SecretBox.of(settings)
    cases = {
        "stream_enabled": {"stream_enabled": True},  # no write key yet
        "company_property": {"company_property": "has space"},
        "segment_api_url": {"segment_api_url": "http://169.254.169.254"},
        "segment_write_key": {"segment_write_key": " padded "},
    }
    for field, changes in cases.items():
        async with transaction(sessions) as session:
            row = await environments.get(session, env.id)
            with pytest.raises(BadRequest) as refused:
                await events.change_settings(session, row, box, changes)
        assert refused.value.extra.get("field") == field, changes


async def test_turning_the_stream_on_says_so_in_the_stream_once(
    sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    box = SecretBox.of(settings)
    changes = {"segment_write_key": "wk_" + uuid.uuid4().hex, "stream_enabled": True}
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        changed = await events.change_settings(
            session, row, box, {**changes, "segment_api_url": "us"}
        )
        again = await events.change_settings(session, row, box, {"stream_enabled": True})
    assert set(changed) == {"segment_write_key", "stream_enabled", "segment_api_url"}
    assert again == []
    names = [r.payload["event"] for r in await _outbox(sessions, env)]
    assert names == [events.STREAM_ENABLED]


async def test_deleting_an_environment_that_holds_data_needs_force(
    sessions: SessionMaker, make_environment: MakeEnv, inbound: Inbound
) -> None:
    env = await make_environment()
    await inbound.receive(
        env.key,
        client="c",
        given_signature=None,
        read_body=Body(orjson.dumps(track(new_id("u"), "Clicked"))),
    )
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        with pytest.raises(Conflict):
            await environments.delete(session, row, force=False)
    async with transaction(sessions) as session:
        await environments.delete(session, await environments.get(session, env.id), force=True)
    async with sessions() as session:
        with pytest.raises(NotFound):
            await environments.get(session, env.id)


async def test_a_zero_grace_rotation_keeps_no_previous_key(
    sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        rotated = await events.rotate_webhook_key(session, row, grace_seconds=0)
    assert rotated.replaced_until is None
    assert await previous_key_hashes(sessions, env.id, "webhook") == []


# --- inbound.erasure, outbox -------------------------------------------------------------------


async def test_erasure_is_audited_by_digest_and_runs_once_per_message_id(
    engine: AsyncEngine,
    sessions: SessionMaker,
    settings: Settings,
    make_environment: MakeEnv,
    inbound: Inbound,
) -> None:
    key = InstallKey.of(settings)
    env = await make_environment()
    user_id = new_id("ada")
    await inbound.receive(
        env.key,
        client="c",
        given_signature=None,
        read_body=Body(orjson.dumps([identify(user_id, {"a": 1}), track(user_id, "Clicked")])),
    )
    async with driver_transaction(engine) as pg:
        first = await erasure.erase_user(
            pg, env.id, user_id, key, requested_by=erasure.SEGMENT, message_id="del-1"
        )
        again = await erasure.erase_user(
            pg, env.id, user_id, key, requested_by=erasure.SEGMENT, message_id="del-1"
        )
    assert first.removed["users"] == 1 and first.removed["events"] == 2
    assert again.repeated and not again.anything
    async with sessions() as session:
        [row] = await session.scalars(select(Deletion).where(Deletion.environment_id == env.id))
    # An HMAC under the install's key, not a SHA-256 anyone can test a guessed id against.
    assert row.user_id_hash == hmac.new(key.current, user_id.encode(), "sha256").hexdigest()
    assert row.user_id_hash != hashlib.sha256(user_id.encode()).hexdigest()
    with pytest.raises(NotFound):
        await erasure.erase_by_admin(engine, env.id, user_id, key)  # nothing left: no audit row


async def test_replay_leaves_a_message_over_the_size_limit_dead(
    sessions: SessionMaker, make_environment: MakeEnv, settings: Settings
) -> None:
    env = await make_environment()
    big = track("u", "Exported", {"rows": "x" * MAX_MESSAGE_BYTES})
    small = track("u", "Clicked")
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        row.stream_enabled = True
        published = await publish(session, row, [big, small])
        await session.execute(
            text("UPDATE outbox SET status = 'dead' WHERE environment_id = :e"), {"e": env.id}
        )
    assert [d["messageId"] for d in published.dead] == [big["messageId"]]
    async with transaction(sessions) as session:
        done = await outbox.replay_filtered(
            session, env.id, outbox.ReplayFilter(), dry_run=False, actor="test"
        )
        assert done.queued == 1
    statuses = {r.message_id: r.status for r in await _outbox(sessions, env)}
    assert statuses == {big["messageId"]: "dead", small["messageId"]: "pending"}


async def _outbox(sessions: SessionMaker, env: Env) -> list[OutboxMessage]:
    async with sessions() as session:
        stmt = select(OutboxMessage).where(OutboxMessage.environment_id == env.id)
        return list(await session.scalars(stmt.order_by(OutboxMessage.id)))
