"""The Segment-compatible intake (/v1), end to end against the real server: Segment's own Python
library (segment-analytics-python) pointed at us with `host=`, publishing through us to a
Segment-like sink, delivered by the in-process worker; and each of Segment's refusals.

The Node library (@segment/analytics-node) has its own module, test_intake_node.py.
"""

from __future__ import annotations

import gzip
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from segment.analytics.request import APIError

from integration.spec import parse_time
from integration.store.db import SessionMaker
from integration.store.models import OutboxMessage
from tests.harness import wait_for
from tests.intake_support import (
    basic,
    flush,
    post,
    run_id,
    segment_client,
    segment_error,
)
from tests.outbound_support import (
    PLATFORM_PREFIX as PLATFORM,
)
from tests.outbound_support import (
    Delivery,
    Streams,
    TimedSink,
    after_sweeps,
    outbox,
)
from tests.processes import Process
from tests.segment_payloads import MakeEnv

KB = 1024


def gzip_bomb(size: int) -> bytes:
    """`size` bytes of spaces after a JSON opening, gzipped, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(b'{"batch":[')]
    chunk = b" " * (1024 * KB)
    out += [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*out, packer.flush()])


async def product_rows(sessions: SessionMaker, env_id: uuid.UUID) -> list[OutboxMessage]:
    """The environment's outbox rows, without the platform's own events."""
    rows = await outbox(sessions, env_id)
    return [r for r in rows if not str(r.payload.get("anonymousId", "")).startswith(PLATFORM)]


async def recorded(sessions: SessionMaker, env_id: uuid.UUID, ids: set[str]) -> bool:
    rows = {r.message_id: r.status for r in await product_rows(sessions, env_id)}
    return all(rows.get(m) == "delivered" for m in ids)


def delivered(sink: TimedSink, key: str, ids: set[str]) -> set[str]:
    return ids & set(sink.product_ids(key))


def arrivals(sink: TimedSink, key: str, ids: set[str]) -> list[str]:
    """Every arrival at the sink of these messageIds, repeats included."""
    return [m for m in sink.product_ids(key) if m in ids]


# Segment's own library, through us, to Segment -----------------------------------------------


async def test_done_when_segments_own_library_streams_through_us_with_nothing_lost_across_a_worker_restart(  # noqa: E501
    delivery: Delivery, sink: TimedSink, server: Process, sessions: SessionMaker
) -> None:
    """`Client(write_key, host=OUR_URL)`, used as analytics-python's docs say, streams to
    Segment through us. Mid-stream the worker stops: what the library sends meanwhile is
    acknowledged and kept; the worker starts again and every event arrives, once."""
    env, segment_key = await delivery.stream()
    run = run_id()

    def send(analytics: Any, seqs: range) -> set[str]:
        for seq in seqs:
            analytics.track(
                f"user-{seq % 5}", "Flow Started", {"seq": seq}, message_id=f"{run}-{seq}"
            )
        return {f"{run}-{seq}" for seq in seqs}

    with segment_client(server.url, env) as analytics:
        async with delivery.worker():
            first = send(analytics, range(0, 150))
            await flush(analytics)
            # Stopped once it has recorded them: stopped mid-request, a worker sends that batch
            # again (at least once, with the same messageIds, which Segment dedupes).
            await wait_for(lambda: recorded(sessions, env.id, first))
        # The worker is down; the library goes on sending, and we go on acknowledging.
        second = send(analytics, range(150, 300))
        await flush(analytics)
        assert delivered(sink, segment_key, second) == set()
        rows = {r.message_id: r.status for r in await product_rows(sessions, env.id)}
        assert {rows[m] for m in second} == {"pending"}
        async with delivery.worker():
            third = send(analytics, range(300, 400))
            await flush(analytics)
            everything = first | second | third
            await wait_for(lambda: recorded(sessions, env.id, everything))

    assert sorted(arrivals(sink, segment_key, everything)) == sorted(everything), "once each"


async def test_every_call_of_the_library_arrives_as_segment_would_store_it(
    delivery: Delivery, sink: TimedSink, server: Process
) -> None:
    env, segment_key = await delivery.stream()
    run = run_id()
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with segment_client(server.url, env) as analytics:
        analytics.identify("user-1", {"plan": "pro"}, message_id=f"{run}-identify")
        analytics.track("user-1", "Report Viewed", {"n": 1}, message_id=f"{run}-track")
        analytics.page("user-1", "Docs", "Intake", {"path": "/v1"}, message_id=f"{run}-page")
        analytics.screen("user-1", "App", "Home", message_id=f"{run}-screen")
        analytics.group("user-1", "acme", {"seats": 5}, message_id=f"{run}-group")
        analytics.alias("anon-1", "user-1", message_id=f"{run}-alias")
        analytics.track(anonymous_id="anon-2", event="Old", timestamp=at, message_id=f"{run}-old")
        ids = {f"{run}-{kind}" for kind in ("identify", "track", "page", "screen", "group")}
        ids |= {f"{run}-alias", f"{run}-old"}
        async with delivery.worker():
            await flush(analytics)
            await wait_for(lambda: delivered(sink, segment_key, ids) == ids)

    got = {m["messageId"]: m for m in sink.messages(segment_key) if m["messageId"] in ids}
    assert {m["type"] for m in got.values()} == {
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    }
    for message in got.values():
        # The library's own name stays; our key never travels on.
        assert message["context"]["library"]["name"] == "analytics-python"
        assert "writeKey" not in message and "sentAt" not in message
        assert parse_time(message["receivedAt"]) is not None
        assert parse_time(message["originalTimestamp"]) is not None
    assert got[f"{run}-track"]["properties"] == {"n": 1}
    assert got[f"{run}-group"]["groupId"] == "acme"
    assert got[f"{run}-alias"]["previousId"] == "anon-1"
    old = got[f"{run}-old"]
    # The library sent `timestamp` and the batch's `sentAt` from one clock: the correction
    # keeps the event at the time it was tracked (within the request's own time).
    corrected = parse_time(old["timestamp"])
    assert corrected is not None and abs(corrected - at) < timedelta(seconds=5)
    assert parse_time(old["originalTimestamp"]) == at


async def test_gzip_bodies_from_the_library_arrive(
    delivery: Delivery, sink: TimedSink, server: Process
) -> None:
    env, segment_key = await delivery.stream()
    run = run_id()
    with segment_client(server.url, env, gzip=True) as analytics:
        for seq in range(20):
            analytics.track("user-g", "Zipped", {"seq": seq}, message_id=f"{run}-{seq}")
        ids = {f"{run}-{seq}" for seq in range(20)}
        async with delivery.worker():
            await flush(analytics)
            await wait_for(lambda: delivered(sink, segment_key, ids) == ids)
    assert sorted(arrivals(sink, segment_key, ids)) == sorted(ids)


# keys ---------------------------------------------------------------------------------------


async def test_a_wrong_key_is_refused_before_the_body_is_read(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    await make_environment()
    # Not even JSON: a body that would be 400 is 401, since the key is looked at first.
    for key in ("wrong-key", "x" * 32):
        answer = await post(http, "/v1/track", key=key, content=b"{not json")
        segment_error(answer, 401, "invalid_write_key")
    segment_error(
        await post(http, "/v1/batch", {"batch": [{"type": "track"}]}), 401, "missing_write_key"
    )
    bearer = {"Authorization": "Bearer something"}
    answer = await post(http, "/v1/track", {"userId": "u", "event": "E"}, headers=bearer)
    segment_error(answer, 401, "missing_write_key")


async def test_the_library_is_told_a_wrong_key_is_wrong(
    server: Process, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    env.source_write_key = "not-our-key-" + uuid.uuid4().hex
    with (
        segment_client(server.url, env, sync_mode=True) as analytics,
        pytest.raises(APIError) as refused,
    ):
        analytics.track("user-1", "Flow Started")
    assert (refused.value.status, refused.value.code) == (401, "invalid_write_key")


async def test_the_key_in_the_body_works_as_segment_accepts_it(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(stream_enabled=False)
    single = {"userId": "u", "event": "E", "writeKey": env.source_write_key}
    assert (await post(http, "/v1/track", single)).json()["success"] is True
    batch = {"batch": [{"type": "identify", "userId": "u"}], "writeKey": env.source_write_key}
    assert (await post(http, "/v1/batch", batch)).json()["success"] is True
    wrong = {"batch": [{"type": "identify", "userId": "u"}], "writeKey": "wrong"}
    segment_error(await post(http, "/v1/import", wrong), 401, "invalid_write_key")


async def test_a_rotated_out_key_works_for_its_grace_then_not_at_all(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    old = env.source_write_key
    path = f"/api/environments/{env.id}/rotate-source-write-key"
    rotated = await admin.post(path, params={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["source_write_key"]
    assert new != old and rotated.json()["source_write_key_hint"] == "…" + new[-4:]
    assert rotated.json()["previous_source_write_key_valid_until"] is not None
    message = {"userId": "u", "event": "E"}
    for key in (old, new):
        assert (await post(http, "/v1/track", message, key=key)).status_code == 200
    # Grace 0 revokes the key it replaces at once; the earlier key, promised an hour, ends
    # now too only when that is asked for.
    early = {"grace_seconds": 0, "end_previous_keys_early": "true"}
    newest = (await admin.post(path, params=early)).json()["source_write_key"]
    for key in (old, new):
        segment_error(await post(http, "/v1/track", message, key=key), 401, "invalid_write_key")
    assert (await post(http, "/v1/track", message, key=newest)).status_code == 200
    assert newest not in (await admin.get(f"/api/environments/{env.id}")).text


# Segment's limits and refusals ----------------------------------------------------------------


async def test_a_message_over_32_kb_refuses_the_whole_request(
    http: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    key = env.source_write_key
    big = {"userId": "u", "event": "Big", "properties": {"blob": "x" * (33 * KB)}}
    segment_error(await post(http, "/v1/track", big, key=key), 400, "message_too_large")
    small = {"type": "track", "userId": "u", "event": "Small", "messageId": f"m-{run_id()}"}
    batch = {"batch": [small, {**big, "type": "track"}]}
    segment_error(await post(http, "/v1/batch", batch, key=key), 400, "message_too_large")
    assert await product_rows(sessions, env.id) == []


async def test_a_batch_over_500_kb_is_refused_as_segment_refuses_it(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    messages = [
        {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * (20 * KB)}}
        for _ in range(30)
    ]
    answer = await post(http, "/v1/batch", {"batch": messages}, key=env.source_write_key)
    segment_error(answer, 400, "payload_too_large")
    # More than is ever read: refused without being held.
    huge = b'{"batch":[' + b" " * (1100 * KB) + b"]}"
    answer = await post(http, "/v1/batch", key=env.source_write_key, content=huge)
    segment_error(answer, 413, "body_too_large")


async def test_a_gzip_bomb_is_refused_after_inflating_a_bounded_amount(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    bomb = gzip_bomb(50 * 1024 * KB)
    assert len(bomb) < 100 * KB
    zipped = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = await post(http, "/v1/batch", key=env.source_write_key, content=bomb, headers=zipped)
    segment_error(answer, 413, "body_too_large")
    broken = gzip.compress(b'{"userId":"u","event":"E"}')[:-6]
    answer = await post(http, "/v1/track", key=env.source_write_key, content=broken, headers=zipped)
    segment_error(answer, 400, "invalid_gzip")
    brotli = {"Content-Encoding": "br"}
    answer = await post(http, "/v1/track", key=env.source_write_key, content=b"{}", headers=brotli)
    segment_error(answer, 415, "unsupported_encoding")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[]", "invalid_json"),
        (b'"text"', "invalid_json"),
    ],
)
async def test_bad_json_is_400_in_segments_shape(
    http: httpx.AsyncClient, make_environment: MakeEnv, content: bytes, code: str
) -> None:
    env = await make_environment()
    for path in ("/v1/track", "/v1/batch"):
        segment_error(await post(http, path, key=env.source_write_key, content=content), 400, code)


async def test_invalid_messages_are_refused_alone_or_listed_in_a_batch(
    http: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    key = env.source_write_key
    segment_error(await post(http, "/v1/track", {"userId": "u"}, key=key), 400, "missing_event")
    segment_error(
        await post(http, "/v1/identify", {"traits": {}}, key=key), 400, "missing_identity"
    )
    segment_error(await post(http, "/v1/batch", {"batch": []}, key=key), 400, "invalid_batch")
    good = {"type": "track", "userId": "u", "event": "Kept", "messageId": f"kept-{run_id()}"}
    batch = {"batch": [good, {"type": "track", "userId": "u"}, {"type": "nope", "userId": "u"}]}
    body = (await post(http, "/v1/batch", batch, key=key)).json()
    assert body["success"] is True
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [
        (1, "missing_event"),
        (2, "invalid_type"),
    ]
    assert [r.message_id for r in await product_rows(sessions, env.id)] == [good["messageId"]]
    none_valid = {"batch": [{"type": "track", "userId": "u"}, {"type": "group", "userId": "u"}]}
    refused = segment_error(
        await post(http, "/v1/batch", none_valid, key=key), 400, "invalid_batch"
    )
    assert len(refused["rejected"]) == 2


# what the intake does to a message ----------------------------------------------------------


async def test_messages_are_made_ready_as_segment_makes_them(
    http: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    run = run_id()
    now = datetime.now(UTC)
    # A client whose clock runs an hour ahead: it says it tracked at T+1h-5s and sent at T+1h.
    client_clock = now + timedelta(hours=1)
    batch = {
        "writeKey": env.source_write_key,
        "sentAt": client_clock.isoformat(),
        "context": {"ip": "203.0.113.7", "locale": "en", "library": {"name": "curl"}},
        "integrations": {"All": True, "Mixpanel": False},
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "Skewed",
                "messageId": f"{run}-1",
                "timestamp": (client_clock - timedelta(seconds=5)).isoformat(),
                "context": {"locale": "de"},
                "integrations": {"Mixpanel": True},
                "writeKey": env.source_write_key,
            },
            {"type": "identify", "userId": "u", "traits": {"plan": "pro"}},
        ],
    }
    assert (await post(http, "/v1/batch", batch)).json()["success"] is True
    rows = {r.payload["type"]: r.payload for r in await product_rows(sessions, env.id)}
    track, identify = rows["track"], rows["identify"]

    assert track["messageId"] == f"{run}-1"  # the caller's, so its retries dedupe
    assert identify["messageId"]  # filled in
    # The envelope's context and integrations merged in; the message's own keys win.
    assert track["context"] == {"ip": "203.0.113.7", "locale": "de", "library": {"name": "curl"}}
    assert track["integrations"] == {"All": True, "Mixpanel": False} | {"Mixpanel": True}
    assert identify["context"]["locale"] == "en"
    # Timestamps as Segment sets them.
    received = parse_time(track["receivedAt"])
    corrected = parse_time(track["timestamp"])
    assert received is not None and corrected is not None
    assert abs(received - now) < timedelta(seconds=30)
    assert corrected == received - timedelta(seconds=5)
    assert parse_time(track["originalTimestamp"]) == client_clock - timedelta(seconds=5)
    assert "sentAt" not in track and "writeKey" not in track
    # A message without a timestamp happened when it was received.
    assert parse_time(identify["timestamp"]) is not None
    assert "originalTimestamp" not in identify


async def test_a_callers_retry_is_one_message(
    http: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    message = {"userId": "u", "event": "Retried", "messageId": f"retry-{run_id()}"}
    for _ in range(3):
        assert (await post(http, "/v1/track", message, key=env.source_write_key)).status_code == 200
    assert len(await product_rows(sessions, env.id)) == 1


async def test_our_library_name_is_filled_in_only_where_there_is_none(
    http: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    key = env.source_write_key
    await post(http, "/v1/track", {"userId": "u", "event": "Bare"}, key=key)
    library = {"context": {"library": {"name": "ory", "version": "1"}}}
    await post(http, "/v1/track", {"userId": "u", "event": "Named", **library}, key=key)
    names = {
        r.payload["event"]: r.payload["context"]["library"]
        for r in await product_rows(sessions, env.id)
    }
    assert names["Bare"]["name"] == "segment-integration"
    assert names["Named"] == {"name": "ory", "version": "1"}


# the stream switch ----------------------------------------------------------------------------


async def test_stream_off_is_accepted_not_queued_and_said_so_then_on_flows(
    delivery: Delivery,
    sink: TimedSink,
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    server: Process,
    sessions: SessionMaker,
) -> None:
    env, segment_key = await delivery.stream(stream=False)
    run = run_id()
    off = {"userId": "u", "event": "While Off", "messageId": f"{run}-off"}
    answer = await post(http, "/v1/track", off, key=env.source_write_key)
    assert answer.status_code == 200
    assert answer.headers["X-Stream-Enabled"] == "false"
    assert answer.json() == {
        "success": True,
        "queued": 0,
        "stream_enabled": False,
        "detail": "accepted, not queued: this environment's stream to Segment is off",
    }
    with segment_client(server.url, env) as analytics:
        analytics.track("u", "Library While Off", message_id=f"{run}-lib-off")
        await flush(analytics)
        assert await product_rows(sessions, env.id) == []

        turned = await admin.patch(f"/api/environments/{env.id}", json={"stream_enabled": True})
        assert turned.status_code == 200, turned.text
        on = {"userId": "u", "event": "While On", "messageId": f"{run}-on"}
        answer = await post(http, "/v1/track", on, key=env.source_write_key)
        assert answer.headers["X-Stream-Enabled"] == "true"
        assert answer.json() == {"success": True}
        analytics.track("u", "Library While On", message_id=f"{run}-lib-on")
        async with delivery.worker():
            await flush(analytics)
            wanted = {f"{run}-on", f"{run}-lib-on"}
            await wait_for(lambda: delivered(sink, segment_key, wanted) == wanted)
            await after_sweeps(2)
    # What came while it was off was never queued, so never sent.
    assert not delivered(sink, segment_key, {f"{run}-off", f"{run}-lib-off"})


# deliveries, and copies as events --------------------------------------------------------------


async def test_intake_messages_show_in_deliveries_and_as_events_when_kept(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    delivery: Delivery,
    sink: TimedSink,
    sessions: SessionMaker,
) -> None:
    env, segment_key = await delivery.stream()
    patched = await admin.patch(f"/api/environments/{env.id}", json={"store_outbound_events": True})
    assert patched.status_code == 200 and patched.json()["store_outbound_events"] is True
    run = run_id()
    message = {"userId": f"user-{run}", "event": "Copied", "messageId": f"{run}-copy"}
    assert (await post(http, "/v1/track", message, key=env.source_write_key)).status_code == 200
    async with delivery.worker():
        await wait_for(lambda: recorded(sessions, env.id, {f"{run}-copy"}))
    assert f"{run}-copy" in sink.product_ids(segment_key)

    base = f"/api/environments/{env.id}"
    deliveries = (await admin.get(f"{base}/deliveries")).json()["items"]
    assert [d["status"] for d in deliveries if d["message_id"] == f"{run}-copy"] == ["delivered"]
    copies = (await admin.get(f"{base}/events", params={"direction": "outbound"})).json()
    copied = [e for e in copies["items"] if e["message_id"] == f"{run}-copy"]
    assert len(copied) == 1 and copied[0]["name"] == "Copied"
    assert copied[0]["user_id"] == f"user-{run}" and copied[0]["direction"] == "outbound"
    # The same message coming back from Segment through the webhook is stored in its own right,
    # with its effects (the user), not taken for a duplicate of the copy.
    back = {"type": "track", **message}
    stored = await http.post(env.webhook_path, json=back)
    assert stored.json()["stored"] == 1
    inbound = (await admin.get(f"{base}/events", params={"direction": "inbound"})).json()
    assert [e["message_id"] for e in inbound["items"]] == [f"{run}-copy"]
    assert (await admin.get(f"{base}/users/user-{run}")).status_code == 200
    bad = await admin.get(f"{base}/events", params={"direction": "sideways"})
    assert bad.status_code == 400


async def test_copies_are_off_by_default(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    assert (await admin.get(f"/api/environments/{env.id}")).json()["store_outbound_events"] is False
    await post(http, "/v1/track", {"userId": "u", "event": "Not Copied"}, key=env.source_write_key)
    events = (await admin.get(f"/api/environments/{env.id}/events")).json()
    assert events["items"] == []


# CORS -----------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"


async def test_cors_preflight_and_calls_from_allowed_origins_only(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    origin = f"https://{run_id()}.example.com"
    env = await make_environment(cors_allowed_origins=[origin + ":443", ALLOWED])
    view = (await admin.get(f"/api/environments/{env.id}")).json()
    assert view["cors_allowed_origins"] == [origin, ALLOWED]  # as browsers write them

    asking = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    asking["Access-Control-Request-Headers"] = "authorization, content-type, content-encoding"
    for path in ("/v1/track", "/v1/batch", "/v1/t", "/v1/b"):
        answer = await http.options(path, headers=asking)
        assert answer.status_code == 204, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        allowed = {
            h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert {"authorization", "content-type", "content-encoding"} <= allowed
        assert "POST" in answer.headers["Access-Control-Allow-Methods"]
        assert "Origin" in answer.headers["Vary"]

    stranger = {**asking, "Origin": "https://evil.example.net"}
    refused = await http.options("/v1/track", headers=stranger)
    segment_error(refused, 403, "origin_not_allowed")
    assert not [h for h in refused.headers if h.lower().startswith("access-control-")]
    wrong_method = await http.options(
        "/v1/track", headers={**asking, "Access-Control-Request-Method": "PUT"}
    )
    assert (
        wrong_method.status_code == 403
        and "access-control-allow-origin" not in wrong_method.headers
    )
    plain = await http.options("/v1/track")
    assert plain.status_code == 204 and plain.headers["Allow"] == "POST, OPTIONS"
    segment_error(await http.options("/v1/nothing", headers=asking), 404, "not_found")

    # The call itself, as analytics.js makes it: text/plain, the key in the body.
    call = (
        b'{"userId":"u","event":"From The Browser","writeKey":"%s"}' % env.source_write_key.encode()
    )
    browser = {"Origin": origin, "Content-Type": "text/plain"}
    answer = await http.post("/v1/t", content=call, headers=browser)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Stream-Enabled" in answer.headers["Access-Control-Expose-Headers"]
    answer = await http.post(
        "/v1/t", content=call, headers={**browser, "Origin": "https://evil.example.net"}
    )
    segment_error(answer, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in answer.headers


async def test_an_origin_of_another_environment_may_not_call_this_one(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    origin = f"https://{run_id()}.example.com"
    await make_environment(cors_allowed_origins=[origin])
    other = await make_environment()
    answer = await post(
        http,
        "/v1/track",
        {"userId": "u", "event": "E"},
        key=other.source_write_key,
        headers={"Origin": origin},
    )
    segment_error(answer, 403, "origin_not_allowed")


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/", "ftp://x.test", "https://a.test/path", "*"],
)
async def test_origins_must_be_origins(
    admin: httpx.AsyncClient, make_environment: MakeEnv, origin: str
) -> None:
    env = await make_environment()
    answer = await admin.patch(
        f"/api/environments/{env.id}", json={"cors_allowed_origins": [origin]}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "cors_allowed_origins"


async def test_the_intake_answers_basic_auth_headers_it_cannot_read(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    await make_environment()
    unreadable = ("Basic", "Basic !!!", "Basic " + "w" * 5001, "basic", "Basic Og==")
    for header in (*unreadable, b"Basic \xe9"):
        answer = await http.post("/v1/track", content=b"{}", headers={"Authorization": header})
        segment_error(answer, 401, "missing_write_key")
    assert basic("k")["Authorization"] == "Basic azo="
