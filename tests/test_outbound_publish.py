"""Publishing product events: over HTTP (`POST /api/environments/{id}/product-events`) and
through `integration.outbound.publish.publish` inside the caller's transaction.

No worker runs here: these tests look at what lands in the outbox (Postgres), and at what the
API answers. Delivery itself is in test_outbound_delivery.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integration import LIBRARY_NAME, __version__
from integration.environments import service as environments
from integration.outbound.jobs import deliver_job_id
from integration.outbound.publish import publish
from integration.queue import JobName
from integration.spec import MAX_MESSAGE_BYTES
from integration.store.db import SessionMaker, transaction
from integration.store.jobs import Job, pending
from tests.conftest import TestEnvironment as HarnessEnv
from tests.outbound_support import new_write_key, outbox, stop_streams, track

# Nothing listens here: should a later test's worker pick these rows up, it gets a refusal.
NOWHERE = "http://127.0.0.1:9"

MakeEnv = Callable[..., Awaitable[HarnessEnv]]


@pytest.fixture
async def env_factory(
    make_environment: Callable[..., Awaitable[HarnessEnv]], sessions: SessionMaker
) -> AsyncIterator[MakeEnv]:
    """Environments with a write key, pointing nowhere; streams turned off afterwards."""
    made: list[uuid.UUID] = []

    async def make(*, stream: bool) -> HarnessEnv:
        env = await make_environment(
            "pub",
            segment_write_key=new_write_key(),
            segment_api_url=NOWHERE,
            stream_enabled=stream,
        )
        made.append(env.id)
        return env

    yield make
    await stop_streams(sessions, made)


def _url(env_id: uuid.UUID | str, tail: str = "product-events") -> str:
    return f"/api/environments/{env_id}/{tail}"


async def _rows_by_message_id(sessions: SessionMaker, env_id: uuid.UUID) -> dict[str, Any]:
    return {r.message_id: r for r in await outbox(sessions, env_id)}


# --- stream off / on ------------------------------------------------------------------------


async def test_stream_off_accepts_but_queues_nothing(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=False)

    one = await admin.post(_url(env.id), json=track(1, run="off", message_id="off-1"))
    many = await admin.post(_url(env.id), json=[track(i, run="off") for i in range(3)])

    assert one.status_code == 202, one.text
    assert one.json() == {
        "accepted": 1,
        "stream_enabled": False,
        "queued": 0,
        "message_ids": [],
        "duplicates": 0,
        "dead": [],
        "rejected": [],
    }
    assert many.status_code == 202
    assert many.json()["accepted"] == 3
    assert many.json()["queued"] == 0
    assert await outbox(sessions, env.id) == []


async def test_stream_on_queues_normalised_messages(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)
    given_ts = "2024-05-01T10:00:00.000Z"
    body = [
        track(1, run="norm", message_id="keep-me", context={"ip": "203.0.113.9"}),
        track(2, run="norm", timestamp=given_ts),
        {"type": "Identify", "userId": "u-9", "traits": {"plan": "pro"}},
    ]
    before = datetime.now(UTC) - timedelta(seconds=5)

    response = await admin.post(_url(env.id), json=body)

    assert response.status_code == 202, response.text
    out = response.json()
    assert out["stream_enabled"] is True
    assert (out["accepted"], out["queued"], out["duplicates"]) == (3, 3, 0)
    ids = out["message_ids"]
    assert ids[0] == "keep-me"
    assert len(set(ids)) == 3
    for generated in ids[1:]:
        uuid.UUID(generated)  # a fresh UUID when none was given

    rows = await _rows_by_message_id(sessions, env.id)
    for message_id in ids:
        row = rows[message_id]
        payload = row.payload
        assert row.status == "pending"
        assert payload["messageId"] == message_id
        assert payload["context"]["library"] == {
            "name": "segment-integration",
            "version": __version__,
        }
        stamped = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        assert stamped.tzinfo is not None
    first, second, third = (rows[i].payload for i in ids)
    assert first["context"]["ip"] == "203.0.113.9"  # the caller's context is kept
    assert before <= datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert second["timestamp"] == given_ts  # a given timestamp is kept
    assert third["type"] == "identify" and rows[ids[2]].type == "identify"
    assert third["traits"] == {"plan": "pro"}


async def test_numeric_message_id_is_kept_as_text(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    """Inbound keeps numeric ids as their text; a publisher's own id must not be replaced,
    or re-publishing the same event would reach Segment twice under two ids."""
    env = await env_factory(stream=True)
    message = track(1, run="num", message_id=None) | {"messageId": 987654321}

    first = await admin.post(_url(env.id), json=message)
    again = await admin.post(_url(env.id), json=message)

    assert first.json()["message_ids"] == ["987654321"]
    assert again.json()["queued"] == 0
    assert again.json()["duplicates"] == 1
    assert "987654321" in await _rows_by_message_id(sessions, env.id)


async def test_duplicate_message_id_is_not_queued_twice(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)
    message = track(1, run="dup", message_id="dup-1")

    first = await admin.post(_url(env.id), json=message)
    second = await admin.post(_url(env.id), json=[message, track(2, run="dup", message_id="dup-2")])
    same_request = await admin.post(
        _url(env.id), json=[track(3, run="dup", message_id="dup-3")] * 2
    )

    assert first.json()["queued"] == 1
    assert second.status_code == 202
    assert second.json()["queued"] == 1
    assert second.json()["duplicates"] == 1
    assert second.json()["message_ids"] == ["dup-2"]
    assert same_request.json()["message_ids"] == ["dup-3"]
    assert same_request.json()["duplicates"] == 1
    assert same_request.json()["accepted"] == 2
    rows = [r for r in await outbox(sessions, env.id) if r.message_id.startswith("dup-")]
    assert sorted(r.message_id for r in rows) == ["dup-1", "dup-2", "dup-3"]


async def test_oversized_message_is_dead_at_once_with_a_reason(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)
    big = track(1, run="big", message_id="big-1", properties={"blob": "x" * (40 * 1024)})
    small = track(2, run="big", message_id="small-1")

    response = await admin.post(_url(env.id), json=[big, small])

    assert response.status_code == 202, response.text
    out = response.json()
    assert out["queued"] == 1 and out["message_ids"] == ["small-1"]
    assert len(out["dead"]) == 1
    assert out["dead"][0]["messageId"] == "big-1"
    assert str(MAX_MESSAGE_BYTES) in out["dead"][0]["detail"]

    dead = (await admin.get(_url(env.id, "deliveries"), params={"status": "dead"})).json()
    assert [d["message_id"] for d in dead["items"]] == ["big-1"]
    assert "32768 bytes" in dead["items"][0]["last_error"]
    assert dead["items"][0]["attempts"] == 0  # never sent
    assert dead["items"][0]["response_status"] is None
    pending = (await admin.get(_url(env.id, "deliveries"), params={"status": "pending"})).json()
    assert "big-1" not in {d["message_id"] for d in pending["items"]}
    assert "small-1" in {d["message_id"] for d in pending["items"]}


# --- validation -----------------------------------------------------------------------------

INVALID: list[tuple[Any, str]] = [
    ({"type": "track", "event": "Flow Started"}, "missing_identity"),
    ({"type": "track", "userId": "u1"}, "missing_event"),
    ({"type": "track", "userId": "u1", "event": "  "}, "missing_event"),
    ({"type": "group", "userId": "u1"}, "missing_group_id"),
    ({"type": "alias", "userId": "u1"}, "missing_previous_id"),
    ({"type": "identify", "userId": "u1", "traits": ["a"]}, "invalid_field"),
    ({"type": "track", "userId": "u1", "event": "E", "properties": "x"}, "invalid_field"),
    ({"type": "track", "userId": "u1", "event": "E", "timestamp": "yesterday"}, "invalid_field"),
    ({"type": "purchase", "userId": "u1"}, "invalid_type"),
    ({"userId": "u1", "event": "E"}, "missing_type"),
    ([1], "invalid_message"),
]


@pytest.mark.parametrize(("body", "error"), INVALID)
async def test_invalid_message_is_refused_with_a_reason(
    admin: httpx.AsyncClient,
    env_factory: MakeEnv,
    sessions: SessionMaker,
    body: Any,
    error: str,
) -> None:
    env = await env_factory(stream=True)
    before = len(await outbox(sessions, env.id))

    response = await admin.post(_url(env.id), json=body)

    assert response.status_code == 400, response.text
    out = response.json()
    assert out["error"] == error
    assert isinstance(out["detail"], str) and out["detail"]
    assert out["accepted"] == 0
    assert out["rejected"][0]["index"] == 0
    assert len(await outbox(sessions, env.id)) == before


async def test_invalid_type_names_the_known_types(
    admin: httpx.AsyncClient, env_factory: MakeEnv
) -> None:
    env = await env_factory(stream=True)
    response = await admin.post(_url(env.id), json={"type": "purchase", "userId": "u1"})
    assert response.status_code == 400
    for known in ("alias", "group", "identify", "page", "screen", "track"):
        assert known in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[]", "invalid_body"),
        (b'"track"', "invalid_body"),
        (b"42", "invalid_body"),
    ],
)
async def test_bad_body_is_refused(
    admin: httpx.AsyncClient, env_factory: MakeEnv, content: bytes, error: str
) -> None:
    env = await env_factory(stream=True)
    response = await admin.post(
        _url(env.id), content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.json()["detail"]


async def test_body_over_the_limit_is_413(admin: httpx.AsyncClient, env_factory: MakeEnv) -> None:
    env = await env_factory(stream=True)
    blob = (
        b'{"type":"track","userId":"u","event":"E","properties":{"b":"'
        + b"x" * (10 * 1024 * 1024)
        + b'"}}'
    )
    response = await admin.post(
        _url(env.id), content=blob, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_mixed_list_queues_the_valid_and_lists_the_rejected(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)
    body = [
        track(0, run="mix", message_id="mix-0"),
        {"type": "track", "userId": "u1"},
        track(2, run="mix", message_id="mix-2"),
        {"type": "purchase", "userId": "u1"},
    ]

    response = await admin.post(_url(env.id), json=body)

    assert response.status_code == 202, response.text
    out = response.json()
    assert out["accepted"] == 2
    assert out["message_ids"] == ["mix-0", "mix-2"]
    assert [(r["index"], r["error"]) for r in out["rejected"]] == [
        (1, "missing_event"),
        (3, "invalid_type"),
    ]
    assert {"mix-0", "mix-2"} <= set(await _rows_by_message_id(sessions, env.id))


async def test_validation_applies_with_the_stream_off_too(
    admin: httpx.AsyncClient, env_factory: MakeEnv
) -> None:
    env = await env_factory(stream=False)
    response = await admin.post(_url(env.id), json={"type": "group", "userId": "u1"})
    assert response.status_code == 400
    assert response.json()["error"] == "missing_group_id"


# --- auth and environment scoping -----------------------------------------------------------


async def test_admin_token_is_required(
    http: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)
    before = len(await outbox(sessions, env.id))
    calls = [
        http.post(_url(env.id), json=track(1, run="auth")),
        http.post(
            _url(env.id), json=track(1, run="auth"), headers={"Authorization": "Bearer wrong"}
        ),
        http.get(_url(env.id, "deliveries")),
        http.post(_url(env.id, "deliveries/replay")),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    assert len(await outbox(sessions, env.id)) == before


# A well-formed id no environment has; fixed, so every xdist worker collects the same tests.
@pytest.mark.parametrize("env_id", ["5a72adc8-9bce-4ea6-9d23-11f8190f7e09", "not-a-uuid"])
async def test_unknown_environment_is_404(admin: httpx.AsyncClient, env_id: str) -> None:
    for response in (
        await admin.post(_url(env_id), json=track(1, run="404")),
        await admin.get(_url(env_id, "deliveries")),
        await admin.post(_url(env_id, "deliveries/replay")),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"


async def test_deliveries_and_replay_stay_inside_their_environment(
    admin: httpx.AsyncClient, env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    mine, theirs = await env_factory(stream=True), await env_factory(stream=True)
    big = track(1, run="scope", message_id="scope-big", properties={"b": "x" * (33 * 1024)})
    await admin.post(_url(theirs.id), json=big)
    their_dead = [r for r in await outbox(sessions, theirs.id) if r.status == "dead"]
    assert [r.message_id for r in their_dead] == ["scope-big"]

    listed = (await admin.get(_url(mine.id, "deliveries"))).json()["items"]
    replayed = await admin.post(
        _url(mine.id, "deliveries/replay"),
        json={"ids": [r.id for r in their_dead], "message_ids": ["scope-big"]},
    )

    assert "scope-big" not in {d["message_id"] for d in listed}
    assert replayed.status_code == 200
    assert replayed.json()["replayed"] == 0
    assert [r.status for r in await outbox(sessions, theirs.id) if r.message_id == "scope-big"] == [
        "dead"
    ]


async def test_deleted_environment_is_404(admin: httpx.AsyncClient, env_factory: MakeEnv) -> None:
    env = await env_factory(stream=False)
    assert (await admin.delete(f"/api/environments/{env.id}")).status_code == 204
    response = await admin.post(_url(env.id), json=track(1, run="gone"))
    assert response.status_code == 404


async def test_deliveries_status_filter_is_checked(
    admin: httpx.AsyncClient, env_factory: MakeEnv
) -> None:
    env = await env_factory(stream=False)
    response = await admin.get(_url(env.id, "deliveries"), params={"status": "lost"})
    assert response.status_code == 400
    assert response.json()["field"] == "status"


# --- the Python function ----------------------------------------------------------------------


async def test_publish_function_writes_in_the_callers_transaction(
    env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)

    async with transaction(sessions) as session:
        target = await environments.get(session, env.id)
        result = await publish(session, target, track(1, run="py", message_id="py-1"))
        assert result.queued == ["py-1"]
        assert pending(session) == [Job(JobName.DELIVER, (str(env.id),), deliver_job_id(env.id))]
        assert pending(session) == []  # handed out once

    rows = await _rows_by_message_id(sessions, env.id)
    assert rows["py-1"].status == "pending"
    assert rows["py-1"].payload["context"]["library"]["name"] == LIBRARY_NAME


async def test_publish_function_rolls_back_with_the_caller(
    env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    env = await env_factory(stream=True)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with transaction(sessions) as session:
            target = await environments.get(session, env.id)
            result = await publish(session, target, track(1, run="py", message_id="py-rb"))
            assert result.queued == ["py-rb"]
            raise Boom

    assert "py-rb" not in await _rows_by_message_id(sessions, env.id)


async def test_publish_function_lists_rejections_and_respects_the_stream_switch(
    env_factory: MakeEnv, sessions: SessionMaker
) -> None:
    on, off = await env_factory(stream=True), await env_factory(stream=False)
    batch: list[Any] = [
        track(1, run="py", message_id="py-ok"),
        {"type": "alias", "userId": "u1"},
        "nope",
    ]

    async with transaction(sessions) as session:
        streaming = await publish(session, await environments.get(session, on.id), batch)
        stopped = await publish(session, await environments.get(session, off.id), batch)

    assert streaming.queued == ["py-ok"]
    assert [(r["index"], r["error"]) for r in streaming.rejected] == [
        (1, "missing_previous_id"),
        (2, "invalid_message"),
    ]
    assert streaming.as_dict()["accepted"] == 1
    assert stopped.stream_enabled is False
    assert stopped.queued == []
    assert stopped.as_dict()["accepted"] == 1
    assert len(stopped.rejected) == 2
    assert await outbox(sessions, off.id) == []
