"""The intake's service without HTTP, and its settings as the CLI and the services make them:
source write keys (created, listed as a hint, rotated), copies of outbound messages as events,
CORS origins."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sqlalchemy import select

from integration.config import Settings
from integration.crypto import SecretBox, hash_key
from integration.environments import service as environments
from integration.errors import Unauthorized
from integration.intake.call import Call
from integration.intake.service import Intake
from integration.outbound import events
from integration.outbound.publish import publish
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment, Event, OutboxMessage
from tests.admin_support import environment_row, previous_key_hashes
from tests.harness import Body
from tests.intake_support import basic
from tests.outbound_support import cli
from tests.segment_payloads import MakeEnv, new_id, track


def _hold(size: int) -> None:
    """The byte budget's reservation, which the service grows for an inflated body."""


@pytest.fixture
def intake(engine: object, sessions: SessionMaker, settings: Settings) -> Intake:
    return Intake(engine, sessions, settings)  # type: ignore[arg-type]


# --- intake.service: authenticate, then read, then validate, then publish ----------------------


async def test_an_unknown_key_in_the_header_is_refused_before_the_body_is_read(
    intake: Intake,
) -> None:
    body = Body(b"not even json")
    call = Call("track", "198.51.100.7", authorization=basic("no-such-key")["Authorization"])
    with pytest.raises(Unauthorized) as refused:
        await intake.receive(call, body, _hold)
    assert refused.value.error == "invalid_write_key"
    assert body.reads == 0


async def test_the_service_publishes_as_publish_does(
    intake: Intake, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(store_outbound_events=True)
    message_id = new_id("m")
    data = orjson.dumps({"userId": "u", "event": "Served", "messageId": message_id})
    call = Call("track", "198.51.100.7", authorization=basic(env.source_write_key)["Authorization"])
    accepted = await intake.receive(call, Body(data), _hold)
    assert accepted.as_dict()["success"] is True
    assert accepted.published.stream_enabled is False and accepted.published.not_queued == 1
    async with sessions() as session:
        copies = list(
            await session.scalars(
                select(Event).where(Event.environment_id == env.id, Event.direction == "outbound")
            )
        )
    assert [c.message_id for c in copies] == [message_id]


# --- store_outbound_events through publish() ----------------------------------------------------


async def test_publish_keeps_copies_only_when_asked_whatever_the_stream(
    sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    kept = await make_environment(store_outbound_events=True)
    plain = await make_environment()
    for env in (kept, plain):
        async with transaction(sessions) as session:
            row = await environments.get(session, env.id)
            message = track("user-c", "Copied", {"company_id": "acme"})
            await publish(session, row, [message, message])  # the same messageId twice
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(Event).where(Event.environment_id.in_([kept.id, plain.id]))
            )
        )
    assert [(r.environment_id, r.direction) for r in rows] == [(kept.id, "outbound")]
    assert rows[0].group_id == "acme" and rows[0].user_id == "user-c"


# --- source write keys ----------------------------------------------------------------------------


async def test_a_source_write_key_is_made_hashed_and_rotated_with_a_platform_event(
    sessions: SessionMaker, settings: Settings, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    row = await environment_row(sessions, env.id)
    assert row is not None and row.source_write_key_hash == hash_key(env.source_write_key)
    assert row.source_write_key_hint == env.source_write_key[-4:]
    assert len(env.source_write_key) == 32 and env.source_write_key.isalnum()

    streaming = {
        "segment_write_key": "wk_" + uuid.uuid4().hex,
        "segment_api_url": "http://127.0.0.1:9",  # closed: nothing leaves this machine
        "stream_enabled": True,
    }
    async with transaction(sessions) as session:
        loaded = await environments.get(session, env.id)
        box = SecretBox.of(settings)
        await events.change_settings(
            session, loaded, box, streaming, allowlist=settings.segment_api_hosts
        )
        key = (await events.rotate_source_write_key(session, loaded, grace_seconds=60)).key
        # Off again in the same transaction: no worker of a later test ever sees these rows.
        await events.change_settings(session, loaded, box, {"stream_enabled": False})
    row = await environment_row(sessions, env.id)
    assert row is not None and row.source_write_key_hash == hash_key(key)
    assert await previous_key_hashes(sessions, env.id, "source_write") == [
        hash_key(env.source_write_key)
    ]
    async with sessions() as session:
        queued = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.environment_id == env.id)
        )
        announced = {r.payload["event"]: r.payload["properties"] for r in queued}
    assert announced[events.SOURCE_WRITE_KEY_ROTATED]["grace_seconds"] == 60
    assert key not in str(announced)


async def test_an_environment_from_before_the_intake_gets_a_key_once(
    sessions: SessionMaker, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        row.source_write_key_hash = row.source_write_key_hint = None
    async with transaction(sessions) as session:
        row = await environments.get(session, env.id)
        made = await events.ensure_source_write_key(session, row)
        again = await events.ensure_source_write_key(session, row)
    assert made is not None and again is None
    stored = await environment_row(sessions, env.id)
    assert stored is not None and stored.source_write_key_hash == hash_key(made)
    assert await previous_key_hashes(sessions, env.id, "source_write") == []


# --- the CLI --------------------------------------------------------------------------------------


async def test_env_create_shows_the_source_write_key_once_and_list_its_hint(
    env_vars: dict[str, str], sessions: SessionMaker
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = await cli(env_vars, "env", "create", name, "--json")
    assert created.code == 0, created
    out = orjson.loads(created.out.strip().splitlines()[-1])
    key = out["source_write_key"]
    assert out["tracking_api_host"] == env_vars["PUBLIC_BASE_URL"]
    async with sessions() as session:
        row = await session.scalar(select(Environment).where(Environment.name == name))
    assert row is not None and row.source_write_key_hash == hash_key(key)

    plain_name = f"cli-{uuid.uuid4().hex[:8]}"
    plain = await cli(env_vars, "env", "create", plain_name)
    assert plain.code == 0 and "Intake write key (shown once" in plain.out, plain
    listed = await cli(env_vars, "env", "list")
    line = next(x for x in listed.out.splitlines() if x.startswith(name + " "))
    assert f"intake_write_key=…{key[-4:]}" in line and key not in listed.out
    as_json = orjson.loads((await cli(env_vars, "env", "list", "--json")).out.splitlines()[-1])
    mine = next(e for e in as_json if e["name"] == name)
    assert mine["source_write_key_hint"] == "…" + key[-4:]
    assert (mine["store_outbound_events"], mine["cors_allowed_origins"]) == (False, [])


async def test_env_set_copies_and_origins_and_rotate_the_source_write_key(
    env_vars: dict[str, str], make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    done = await cli(
        env_vars,
        *("env", "set", env.name, "--store-outbound-events", "on"),
        *("--cors-origins", "https://app.example.com, https://admin.example.com:8443"),
    )
    assert done.code == 0, done
    row = await environment_row(sessions, env.id)
    assert row is not None and row.store_outbound_events is True
    assert row.cors_allowed_origins == ["https://app.example.com", "https://admin.example.com:8443"]
    cleared = await cli(env_vars, "env", "set", env.name, "--cors-origins", "")
    assert cleared.code == 0, cleared
    wrong = await cli(env_vars, "env", "set", env.name, "--cors-origins", "app.example.com")
    assert wrong.code != 0 and "cors_allowed_origins" in wrong.out, wrong
    row = await environment_row(sessions, env.id)
    assert row is not None and row.cors_allowed_origins == []

    rotated = await cli(
        env_vars, "env", "rotate-source-write-key", env.name, "--grace-seconds", "0", "--json"
    )
    assert rotated.code == 0, rotated
    new = orjson.loads(rotated.out.strip().splitlines()[-1])
    assert new["previous_source_write_key_valid_until"] is None
    row = await environment_row(sessions, env.id)
    assert row is not None and row.source_write_key_hash == hash_key(new["source_write_key"])
    assert await previous_key_hashes(sessions, env.id, "source_write") == []
    graced = await cli(env_vars, "env", "rotate-source-write-key", env.name)
    assert graced.code == 0 and "works until" in graced.out, graced
