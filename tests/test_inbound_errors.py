"""Every bad input the inbound contract names, over HTTP: the status, the JSON error shape
{"error": ..., "detail": ...}, and that nothing was stored. Also keys, signatures, the body
limit and a database outage. None of these may ever answer 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from integration.config import Settings
from integration.environments import service as environments
from integration.outbound import events
from integration.store.db import SessionMaker, transaction
from tests import processes
from tests import segment_payloads as sp
from tests.segment_payloads import Env, MakeEnv, at, identify, new_id, track
from tests.tcp_proxy import TcpProxy

JSON_HEADERS = {"Content-Type": "application/json"}
USER = "user-errors"


def error_of(response: httpx.Response, status: int, error: str) -> str:
    """Assert the status and the error shape; returns the detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    return str(body["detail"])


@pytest.fixture
async def env(make_environment: MakeEnv) -> Env:
    return await make_environment()


def raw(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def nested(depth: int) -> bytes:
    """A track whose property is `depth` arrays deep: readable JSON, too deep to store."""
    head = raw(track(USER, "Clicked", {"tree": 0}))
    return head.replace(b'"tree":0', b'"tree":' + b"[" * depth + b"]" * depth)


BAD_BODIES: dict[str, tuple[bytes, str, str]] = {
    # case: (body, error code, a word the detail must contain)
    "not json": (b"{'type': 'identify'", "invalid_json", "JSON"),
    "truncated json": (raw(identify(USER, {}))[:-5], "invalid_json", "JSON"),
    "empty body": (b"", "invalid_json", "empty"),
    "whitespace body": (b" \n\t ", "invalid_json", "empty"),
    "json string": (b'"identify"', "invalid_body", "object"),
    "json number": (b"42", "invalid_body", "object"),
    "json null": (b"null", "invalid_body", "object"),
    "json true": (b"true", "invalid_body", "object"),
    "empty array": (b"[]", "empty_batch", "no messages"),
    "empty batch envelope": (
        b'{"batch": [], "sentAt": "2024-05-14T09:30:00Z"}',
        "empty_batch",
        "no messages",
    ),
    "missing type": (raw(identify(USER, {}, type=None)), "missing_type", "type"),
    "type not a string": (raw(identify(USER, {}, type=7)), "missing_type", "type"),
    "no userId nor anonymousId": (
        raw(identify(None, {"plan": "pro"})),
        "missing_identity",
        "userId or anonymousId",
    ),
    "blank userId": (raw(track("  ", "Clicked")), "missing_identity", "userId"),
    "track without event": (
        raw(without(track(USER, "Clicked"), "event")),
        "missing_event",
        "event",
    ),
    "track with blank event": (raw(track(USER, "   ")), "missing_event", "event"),
    "group without groupId": (raw(sp.group(USER, None, {})), "missing_group_id", "groupId"),
    "alias without previousId": (raw(sp.alias(USER, None)), "missing_previous_id", "previousId"),
    "alias without userId": (raw(sp.alias(None, "anon-1")), "missing_user_id", "userId"),
    "traits not an object": (
        raw(sp.message("identify", userId=USER, traits="pro")),
        "invalid_field",
        "traits",
    ),
    "traits an array": (
        raw(sp.message("identify", userId=USER, traits=["a"])),
        "invalid_field",
        "traits",
    ),
    "properties not an object": (
        raw(sp.message("track", userId=USER, event="Clicked", properties=[1, 2])),
        "invalid_field",
        "properties",
    ),
    "context not an object": (
        raw(track(USER, "Clicked", context="web")),
        "invalid_field",
        "context",
    ),
    "userId an object": (
        raw(sp.message("track", userId={"id": 1}, event="Clicked")),
        "invalid_field",
        "userId",
    ),
    "userId a boolean": (
        raw(sp.message("track", userId=True, event="Clicked")),
        "invalid_field",
        "userId",
    ),
    "userId over 1024 bytes": (
        raw(track("\N{GRINNING FACE}" * 300, "Clicked")),
        "invalid_field",
        "userId",
    ),
    # A time that does not parse is kept raw, not refused (tests/test_inbound_deletes.py).
    "NUL in a property": (
        raw(track(USER, "Clicked", {"note": "a\x00b"})),
        "invalid_message",
        "NUL",
    ),
    "NUL in a trait key": (raw(identify(USER, {"pl\x00an": "pro"})), "invalid_message", "NUL"),
    "nested too deeply": (
        nested(300),
        "invalid_message",
        "nested",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_input_is_refused_with_a_json_error_and_nothing_stored(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker, case: str
) -> None:
    body, error, word = BAD_BODIES[case]
    response = await http.post(env.webhook_path, content=body, headers=JSON_HEADERS)

    detail = error_of(response, 400, error)
    assert word.lower() in detail.lower()
    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_a_backslash_u0000_text_is_not_a_nul(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    # The six characters \u0000 (say, a JSON document kept as a string) are ordinary text.
    payload = '{"note":"\\u0000"}'
    msg = track(USER, "Webhook Logged", {"payload": payload, "path": "C:\\u0000dir"})
    response = await http.post(env.webhook_path, json=msg)
    assert response.status_code == 200, response.text
    assert (await sp.event(sessions, env.id, msg["messageId"])).properties == msg["properties"]


async def test_time_with_an_offset_is_stored_as_the_same_instant(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    msg = track(USER, "Clicked", timestamp="2024-05-14T11:30:00+02:00")
    assert (await http.post(env.webhook_path, json=msg)).status_code == 200
    assert (await sp.event(sessions, env.id, msg["messageId"])).timestamp == at(0)


async def test_message_over_32kb_is_refused_but_smaller_ones_in_the_batch_are_stored(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    big = track(USER, "Report Exported", {"rows": ["x" * 100] * 330})
    assert len(orjson.dumps(big)) > 32 * 1024

    alone = await http.post(env.webhook_path, json=big)
    detail = error_of(alone, 400, "message_too_large")
    assert "32768" in detail
    assert await sp.counts(sessions, env.id) == sp.NOTHING

    small = track(USER, "Clicked")
    response = await http.post(env.webhook_path, json=[big, small])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stored"] == 1
    [rejected] = answer["rejected"]
    assert (rejected["index"], rejected["error"]) == (0, "message_too_large")
    assert rejected["messageId"] == big["messageId"]
    assert [e.message_id for e in await sp.events(sessions, env.id)] == [small["messageId"]]


async def test_body_over_the_configured_limit_is_413(
    env_vars: dict[str, str], env: Env, sessions: SessionMaker
) -> None:
    small_server = await asyncio.to_thread(processes.serve, env_vars, MAX_BODY_BYTES="2048")
    try:
        async with httpx.AsyncClient(base_url=small_server.url, timeout=30) as client:
            batch = [track(USER, "Clicked", {"i": i}) for i in range(10)]
            assert len(orjson.dumps(batch)) > 2048
            response = await client.post(env.webhook_path, json=batch)
            detail = error_of(response, 413, "body_too_large")
            assert "2048" in detail
            assert await sp.counts(sessions, env.id) == sp.NOTHING

            # Without a Content-Length (chunked), the limit holds as the body streams in.
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(8):
                    yield b" " * 512

            streamed = await client.post(env.webhook_path, content=chunks())
            error_of(streamed, 413, "body_too_large")

            # Under the limit, the same server stores it.
            ok = await client.post(env.webhook_path, json=batch[0])
            assert ok.status_code == 200, ok.text
            assert len(await sp.events(sessions, env.id)) == 1
    finally:
        await asyncio.to_thread(small_server.stop)


async def test_unknown_webhook_key_is_401(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    response = await http.post("/webhooks/segment/not-a-real-key", json=track(USER, "Clicked"))
    error_of(response, 401, "unknown_webhook_key")
    # A key that differs from a real one by its last character is just as unknown.
    near = env.key[:-1] + ("A" if env.key[-1] != "A" else "B")
    error_of(await http.post(f"/webhooks/segment/{near}", json={}), 401, "unknown_webhook_key")
    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_rotated_key_works_during_its_grace_period_only(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    async with transaction(sessions) as session:
        current = await environments.get(session, env.id)
        new_key = (await events.rotate_webhook_key(session, current, grace_seconds=3600)).key
    for key in (env.key, new_key):
        response = await http.post(f"/webhooks/segment/{key}", json=track(USER, "Clicked"))
        assert response.status_code == 200, response.text

    async with transaction(sessions) as session:
        current = await environments.get(session, env.id)
        # Grace 0 and ending the earlier key early too: what a leak calls for.
        newest = (
            await events.rotate_webhook_key(
                session, current, grace_seconds=0, end_previous_keys_early=True
            )
        ).key
    for key in (env.key, new_key):
        response = await http.post(f"/webhooks/segment/{key}", json=track(USER, "Refused"))
        error_of(response, 401, "unknown_webhook_key")
    ok = await http.post(f"/webhooks/segment/{newest}", json=track(USER, "Clicked"))
    assert ok.status_code == 200
    assert {e.name for e in await sp.events(sessions, env.id)} == {"Clicked"}


async def test_webhook_key_is_stored_hashed(env: Env, sessions: SessionMaker) -> None:
    async with sessions() as s:
        row = (
            await s.execute(
                text(
                    "SELECT row_to_json(e)::text, webhook_key_hash FROM environments e"
                    " WHERE id = :id"
                ),
                {"id": env.id},
            )
        ).one()
    whole_row, key_hash = row
    assert env.key not in whole_row
    assert key_hash == hashlib.sha256(env.key.encode()).hexdigest()


# signatures

SECRET = "s3cret-signing"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {**JSON_HEADERS, "X-Signature": signature}


async def test_signed_environment_accepts_the_right_signature(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    msg = identify(new_id("user"), {"plan": "pro"})
    body = orjson.dumps(msg)

    response = await http.post(env.webhook_path, content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert [e.message_id for e in await sp.events(sessions, env.id)] == [msg["messageId"]]

    # Upper-case hex is the same signature.
    other = orjson.dumps(track(msg["userId"], "Clicked"))
    headers = signed(other)
    headers["X-Signature"] = headers["X-Signature"].upper()
    assert (await http.post(env.webhook_path, content=other, headers=headers)).status_code == 200


def _bad_signatures(body: bytes) -> dict[str, dict[str, str]]:
    right = signed(body)["X-Signature"]
    return {
        "missing": JSON_HEADERS,
        "empty": {**JSON_HEADERS, "X-Signature": ""},
        "wrong secret": signed(body, "another-secret"),
        "other body": signed(body + b" "),
        "truncated": {**JSON_HEADERS, "X-Signature": right[:-1]},
        "sha256": {
            **JSON_HEADERS,
            "X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        },
    }


async def test_signed_environment_refuses_wrong_or_missing_signatures(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    body = orjson.dumps(identify(new_id("user"), {"plan": "pro"}))
    for case, headers in _bad_signatures(body).items():
        response = await http.post(env.webhook_path, content=body, headers=headers)
        assert response.status_code == 401, case
        detail = error_of(response, 401, "invalid_signature")
        assert "X-Signature" in detail
    # Even an invalid body is refused for its signature first: nothing is said about content.
    error_of(await http.post(env.webhook_path, content=b"nope"), 401, "invalid_signature")
    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_environment_without_secret_accepts_unsigned_messages(
    http: httpx.AsyncClient, env: Env, sessions: SessionMaker
) -> None:
    msg = track(new_id("user"), "Clicked")
    body = orjson.dumps(msg)
    assert (
        await http.post(env.webhook_path, content=body, headers=JSON_HEADERS)
    ).status_code == 200
    # A signature it cannot check is ignored, not an error.
    again = track(msg["userId"], "Clicked Again")
    again_body = orjson.dumps(again)
    response = await http.post(env.webhook_path, content=again_body, headers=signed(again_body))
    assert response.status_code == 200
    assert len(await sp.events(sessions, env.id)) == 2


# database outage


@pytest.fixture
async def db_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    assert settings.database_url
    proxy = await TcpProxy.for_database(settings.database_url).start()
    yield proxy
    await proxy.stop()


async def test_database_outage_answers_503_then_recovers(
    env_vars: dict[str, str],
    settings: Settings,
    db_proxy: TcpProxy,
    env: Env,
    sessions: SessionMaker,
) -> None:
    assert settings.database_url
    proxied = await asyncio.to_thread(
        processes.serve,
        env_vars,
        DATABASE_URL=db_proxy.database_url(settings.database_url),
        DB_POOL_SIZE="2",
    )
    try:
        async with httpx.AsyncClient(base_url=proxied.url, timeout=30) as client:
            first = identify(new_id("user"), {"plan": "pro"})
            response = await client.post(env.webhook_path, json=first)
            assert response.status_code == 200, response.text
            assert db_proxy.connections > 0  # it really went through the proxy

            await db_proxy.cut()
            during = track(first["userId"], "Clicked During Outage")
            for _ in range(2):  # a pooled connection that died, then a refused new one
                response = await client.post(env.webhook_path, json=during)
                error_of(response, 503, "database_unavailable")
                assert int(response.headers["retry-after"]) > 0
            assert await sp.counts(sessions, env.id) == {**sp.NOTHING, "events": 1, "users": 1}

            await db_proxy.restore()
            # Segment retries the same message: it is stored now, once.
            response = await client.post(env.webhook_path, json=during)
            assert response.status_code == 200, response.text
            assert response.json()["stored"] == 1
            stored = {e.message_id for e in await sp.events(sessions, env.id)}
            assert stored == {first["messageId"], during["messageId"]}
    finally:
        await asyncio.to_thread(proxied.stop)


def test_tcp_proxy_targets_the_database_url() -> None:
    unix = TcpProxy.for_database("postgresql+asyncpg://postgres:@/db?host=/tmp/pg")
    assert unix.target.unix_path == "/tmp/pg/.s.PGSQL.5432"
    through = unix.database_url("postgresql+asyncpg://postgres:@/db?host=/tmp/pg")
    assert through == f"postgresql+asyncpg://postgres:@127.0.0.1:{unix.port}/db"
    tcp = TcpProxy.for_database("postgresql://u:p@db.example:6543/x")
    assert (tcp.target.host, tcp.target.port, tcp.target.unix_path) == ("db.example", 6543, None)
