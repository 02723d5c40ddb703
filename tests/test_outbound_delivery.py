"""Delivery end to end: the real API process publishes, a real worker process delivers to a
local Segment-like sink, and Postgres says what happened to every row.

Workers share the run's queue, so each test stops the workers it starts and asserts per write
key; each test turns its environments' streams off afterwards so that later workers do not keep
retrying a sink that is gone. Every environment here also has the platform's own "Segment
Stream Enabled" event in its outbox; assertions on the product's events leave those out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.embedded import free_port, start_redis
from integration.environments import service as environments
from integration.outbound.publish import publish
from integration.queue import Queue
from integration.store.db import SessionMaker, make_sessionmaker, transaction
from tests import processes
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.outbound_support import (
    Delivery,
    Streams,
    TimedSink,
    after_sweeps,
    all_delivered,
    cli,
    outbox,
    publish_http,
    running_worker,
    statuses,
    track,
    tracks,
)

pytestmark = pytest.mark.slow


def _exactly_once(received: list[str], published: list[str]) -> None:
    counts = Counter(received)
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not repeated, f"delivered more than once: {list(repeated.items())[:5]}"
    assert set(counts) == set(published), (
        f"missing {len(set(published) - set(counts))}, unexpected {set(counts) - set(published)}"
    )


def _one_id_per_event(messages: list[dict[str, Any]]) -> None:
    """A resent event carries the messageId it first had, so Segment can dedupe it."""
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for m in messages:
        if "seq" in m.get("properties", {}):
            ids[(m["properties"]["run"], m["properties"]["seq"])].add(m["messageId"])
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}


# --- the happy path ---------------------------------------------------------------------------


async def test_published_events_arrive_once_with_basic_auth_in_batches_within_limits(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    run = uuid.uuid4().hex[:8]
    # 200 events of 1-28 KB: about 3 MB, so several 500 KB batches are needed.
    events = [
        track(i, run=run, message_id=f"{run}-{i}", context={"pad": "p" * (1024 * (1 + i % 28))})
        for i in range(200)
    ]
    published = await delivery.publish(env, events, chunk=100)
    assert len(published) == 200

    await delivery.deliver(env, timeout=30)

    _exactly_once(sink.product_ids(key), published)
    assert sink.refused == []  # no batch over 500 KB, no message over 32 KB, auth accepted
    assert sink.requests >= 6
    assert {r.write_key for r in sink.received} == {key}
    first = next(m for m in sink.messages(key) if m["messageId"] == published[0])
    assert first["context"]["library"]["name"] == "segment-integration"
    assert first["properties"] == {"seq": 0, "run": run}
    rows = await outbox(sessions, env.id)
    assert {(r.status, r.response_status, r.attempts) for r in rows} == {("delivered", 200, 1)}
    assert all(r.delivered_at is not None for r in rows)


async def test_a_round_sends_its_batches_at_once_and_records_each_by_its_own_answer(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    run = uuid.uuid4().hex[:8]
    # 60 events of about 20 KB: one claim, at least three 500 KB batches. Each of its own
    # person: a person's rows travel in one batch of a round (test_outbound_order.py).
    pad = {"pad": "p" * 20_000}
    events = [
        track(i, run=run, message_id=f"{run}-{i}", context=pad, userId=f"user-{run}-{i}")
        for i in range(60)
    ]
    published = await delivery.publish(env, events, chunk=60)
    sink.slow_down(0.5, times=3)  # long enough for the batches to overlap at the sink
    sink.fail(400)  # whichever batch is answered first is refused

    async with delivery.worker():
        await wait_for(lambda: _settled(statuses(sessions, env.id)), timeout=30)

    assert sink.peak >= 2, "the batches of one round went one after another"
    rows = {r.message_id: r for r in await outbox(sessions, env.id) if r.message_id in published}
    dead = {m for m, r in rows.items() if r.status == "dead"}
    delivered = {m for m, r in rows.items() if r.status == "delivered"}
    assert dead and delivered and dead | delivered == set(published)
    assert {rows[m].response_status for m in dead} == {400}
    assert {rows[m].response_status for m in delivered} == {200}
    # What the sink accepted is exactly what is marked delivered, each once.
    _exactly_once(sink.product_ids(key), sorted(delivered))


async def _settled(counts: Awaitable[Counter[str]]) -> bool:
    return "pending" not in await counts


async def test_oversized_message_is_never_sent(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    big = track(0, run="big", message_id="big-0", properties={"b": "x" * (33 * 1024)})
    small = [track(i, run="big", message_id=f"small-{i}") for i in range(1, 4)]
    response = await delivery.admin.post(
        f"/api/environments/{env.id}/product-events", json=[big, *small]
    )
    assert response.json()["dead"][0]["messageId"] == "big-0"

    async with delivery.worker():
        await wait_for(lambda: _has(sink, key, {"small-1", "small-2", "small-3"}))
        await after_sweeps(2)  # and still never sent

    assert "big-0" not in sink.message_ids()
    assert sink.refused == []
    assert (await statuses(sessions, env.id))["dead"] == 1


def _has(sink: TimedSink, key: str, wanted: set[str]) -> bool:
    return wanted <= set(sink.message_ids(key))


async def test_two_environments_never_cross(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    (one, one_key), (two, two_key) = await delivery.stream(), await delivery.stream()
    sent = {one.id: tracks(40, run="one"), two.id: tracks(40, run="two")}
    published: dict[uuid.UUID, list[str]] = {one.id: [], two.id: []}
    for start in range(0, 40, 10):  # interleaved
        for env in (one, two):
            published[env.id] += await delivery.publish(env, sent[env.id][start : start + 10])

    async with delivery.worker():
        for env_id in sent:
            await wait_for(partial(all_delivered, sessions, env_id))

    for env_id, key, run in ((one.id, one_key, "one"), (two.id, two_key, "two")):
        _exactly_once(sink.product_ids(key), published[env_id])
        assert {m["properties"]["run"] for m in _product(sink, key)} == {run}
        platform = [m for m in sink.messages(key) if "seq" not in m.get("properties", {})]
        assert {m["anonymousId"] for m in platform} == {f"environment-{env_id}"}


def _product(sink: TimedSink, key: str) -> list[dict[str, Any]]:
    return [m for m in sink.messages(key) if "seq" in m.get("properties", {})]


# --- the stream switch ------------------------------------------------------------------------


async def test_stream_off_sends_nothing_and_stops_what_is_pending(
    delivery: Delivery,
    admin: httpx.AsyncClient,
    env_vars: dict[str, str],
    sink: TimedSink,
    sessions: SessionMaker,
) -> None:
    off, off_key = await delivery.stream(stream=False)
    paused, paused_key = await delivery.stream()
    off_answer = await admin.post(
        f"/api/environments/{off.id}/product-events", json=tracks(5, run="off")
    )
    assert off_answer.json()["queued"] == 0
    published = await delivery.publish(paused, tracks(20, run="paused"))

    turned_off = await admin.patch(f"/api/environments/{paused.id}", json={"stream_enabled": False})
    assert turned_off.status_code == 200, turned_off.text
    assert turned_off.json()["stream_enabled"] is False

    async with delivery.worker():
        await after_sweeps(3)  # nothing may go out
        assert sink.requests == 0
        assert set(await statuses(sessions, paused.id)) == {"pending"}
        assert await outbox(sessions, off.id) == []

        result = await cli(env_vars, "env", "set", paused.name, "--stream", "on")
        assert result.code == 0, result
        assert "stream_enabled" in result.out

        await wait_for(lambda: all_delivered(sessions, paused.id))

    _exactly_once(sink.product_ids(paused_key), published)
    assert sink.message_ids(off_key) == []


async def test_patch_switches_the_stream_off_and_on(
    admin: httpx.AsyncClient, streams: Streams, sessions: SessionMaker
) -> None:
    env = await streams()
    url = f"/api/environments/{env.id}"

    off = await admin.patch(url, json={"stream_enabled": False})
    assert off.status_code == 200, off.text
    assert off.json()["stream_enabled"] is False
    published = await admin.post(f"{url}/product-events", json=track(1, run="patch"))
    assert published.json()["queued"] == 0

    on = await admin.patch(url, json={"stream_enabled": True})
    assert on.status_code == 200, on.text
    assert on.json()["stream_enabled"] is True
    again = await admin.post(f"{url}/product-events", json=track(2, run="patch"))
    assert again.json()["queued"] == 1


async def test_turning_the_stream_off_stops_retries_in_progress(
    delivery: Delivery, env_vars: dict[str, str], sink: TimedSink, sessions: SessionMaker
) -> None:
    env, _ = await delivery.stream()
    sink.fail(503, times=1000)
    await delivery.publish(env, tracks(5, run="stop"))

    async with delivery.worker():
        await wait_for(lambda: sink.requests >= 2)
        result = await cli(env_vars, "env", "set", env.name, "--stream", "off")
        assert result.code == 0, result
        await wait_for(lambda: sink.in_flight == 0)  # one already in flight may still land
        seen = sink.requests
        await after_sweeps(3)
        assert sink.requests == seen
    assert set(await statuses(sessions, env.id)) == {"pending"}


# --- Segment's answers ------------------------------------------------------------------------


async def test_server_errors_are_retried_until_delivered(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    sink.fail(500, times=2)
    sink.fail(502, times=1)
    published = await delivery.publish(env, tracks(30, run="5xx"))

    await delivery.deliver(env)

    assert [status for status, _ in sink.refused] == [500, 500, 502]
    _exactly_once(sink.product_ids(key), published)
    rows = await outbox(sessions, env.id)
    assert {r.attempts for r in rows} == {4}
    assert {r.response_status for r in rows} == {200}
    assert {r.last_error for r in rows} == {None}


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_is_retried_no_sooner_than_retry_after(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker, form: str
) -> None:
    """The wait runs from Segment's answer: a slow 429 must not shorten it."""
    env, key = await delivery.stream()
    if form == "seconds":
        retry_after, wait = "3", 3.0
    else:
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
        retry_after, wait = format_datetime(when, usegmt=True), 0.0
    sink.slow_down(1.5)
    sink.fail(429, retry_after=retry_after)
    published = await delivery.publish(env, tracks(10, run="429"))

    # Retry-After is honoured up to the backoff cap (issue #20.9): a cap above the wait here.
    await delivery.deliver(env, timeout=30, outbox_backoff_cap_seconds=10.0)

    refused_at = next(t for t, status in sink.answers if status == 429)
    not_before = refused_at + wait if form == "seconds" else when.timestamp()
    _exactly_once(sink.product_ids(key), published)
    arrived = [t for t, k, _ in sink.arrivals if k == key]
    assert min(arrived) >= not_before - 0.05, f"retried {not_before - min(arrived):.2f}s early"
    assert {r.attempts for r in await outbox(sessions, env.id)} == {2}


async def test_client_error_is_dead_listed_and_replayable(
    delivery: Delivery, admin: httpx.AsyncClient, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    sink.fail(400)
    published = await delivery.publish(env, tracks(8, run="400"))
    deliveries = f"/api/environments/{env.id}/deliveries"

    async with delivery.worker():
        await wait_for(lambda: _only(statuses(sessions, env.id), "dead"))
        await after_sweeps(2)  # dead stays dead: no retry
        assert sink.message_ids(key) == []

        dead = (await admin.get(deliveries, params={"status": "dead", "limit": 500})).json()
        assert {d["message_id"] for d in dead["items"]} >= set(published)
        for item in dead["items"]:
            assert item["response_status"] == 400
            assert item["response_body"] == '{"success":false}'
            assert item["last_error"].startswith("Segment refused the batch: HTTP 400")
            assert item["attempts"] == 1
            assert item["next_attempt_at"] is None

        one = await admin.post(f"{deliveries}/replay", json={"message_ids": [published[0]]})
        assert one.json()["replayed"] == 1
        await wait_for(lambda: published[0] in sink.message_ids(key))
        assert len(sink.message_ids(key)) == 1

        rest = await admin.post(f"{deliveries}/replay")
        assert rest.json()["replayed"] == len(dead["items"]) - 1
        await wait_for(lambda: all_delivered(sessions, env.id))

    _exactly_once(sink.product_ids(key), published)
    assert (await admin.get(deliveries, params={"status": "dead"})).json()["items"] == []


async def _only(counts: Awaitable[Counter[str]], status: str) -> bool:
    return set(await counts) == {status}


async def test_a_hung_request_times_out_and_is_retried(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    sink.hang(3.5)  # SEGMENT_TIMEOUT_SECONDS is 2
    published = await delivery.publish(env, tracks(10, run="hang"))

    await delivery.deliver(env, timeout=30)
    await wait_for(lambda: sink.in_flight == 0)

    assert sink.requests >= 2
    assert set(sink.product_ids(key)) == set(published)  # the hung copy may land as well
    _one_id_per_event(sink.messages(key))
    assert all(r.attempts >= 2 for r in await outbox(sessions, env.id))


# --- losing a worker, losing Redis ------------------------------------------------------------


async def test_worker_killed_mid_delivery_loses_nothing(
    delivery: Delivery, env_vars: dict[str, str], sink: TimedSink, sessions: SessionMaker
) -> None:
    env, key = await delivery.stream()
    published = await delivery.publish(env, tracks(50, run="kill"))
    sink.hang(4)

    # A long client timeout, so the batch is surely still in flight when the worker dies.
    doomed = await asyncio.to_thread(processes.worker, env_vars, SEGMENT_TIMEOUT_SECONDS="30")
    try:
        await wait_for(lambda: sink.in_flight > 0, timeout=15)
        await asyncio.to_thread(doomed.kill)
    finally:
        await asyncio.to_thread(doomed.stop)
    assert set(await statuses(sessions, env.id)) == {"pending"}  # its transaction died with it

    killed_at = time.monotonic()
    async with running_worker(env_vars):
        await wait_for(lambda: all_delivered(sessions, env.id), timeout=30)
    recovered_in = time.monotonic() - killed_at
    await wait_for(lambda: sink.in_flight == 0)

    assert set(sink.product_ids(key)) == set(published)
    _one_id_per_event(sink.messages(key))
    assert recovered_in < 20


def _redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_redis_outage_delays_delivery_but_loses_nothing(
    delivery: Delivery,
    env_vars: dict[str, str],
    sink: TimedSink,
    sessions: SessionMaker,
    tmp_path: Path,
) -> None:
    """Our own Redis, server and worker: Redis goes away while events are published."""
    redis = start_redis(tmp_path / "redis", persist=False)
    own = {**env_vars, "REDIS_URL": redis.url, "ARQ_QUEUE_NAME": f"outage:{uuid.uuid4().hex}"}
    env, key = await delivery.stream()
    server = await asyncio.to_thread(processes.serve, own)
    try:
        async with (
            httpx.AsyncClient(
                base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as api,
            running_worker(own) as worker,
        ):
            before = await publish_http(api, env.id, tracks(10, run="before"))
            await wait_for(lambda: _has(sink, key, set(before)))

            redis.stop()
            during: list[str] = []
            for part in range(3):
                started = time.monotonic()
                during += await publish_http(api, env.id, tracks(10, run=f"during{part}"))
                assert time.monotonic() - started < 5
            assert (await api.get("/readyz")).status_code == 503
            await wait_for(lambda: "reconnecting" in worker.log())  # it noticed, and lives on
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()

            redis = start_redis(
                tmp_path / "redis-again", port=_redis_port(redis.url), persist=False
            )
            await wait_for(lambda: all_delivered(sessions, env.id), timeout=30)
            assert worker.proc.poll() is None, worker.log()
            after = await publish_http(api, env.id, tracks(5, run="after"))
            await wait_for(lambda: _has(sink, key, set(after)))
            assert (await api.get("/readyz")).status_code == 200
    finally:
        await asyncio.to_thread(server.stop)
        redis.stop()

    _exactly_once(sink.product_ids(key), before + during + after)


async def test_worker_stops_promptly_while_redis_is_down(
    env_vars: dict[str, str], tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis", persist=False)
    own = {**env_vars, "REDIS_URL": redis.url, "ARQ_QUEUE_NAME": f"down:{uuid.uuid4().hex}"}
    worker = await asyncio.to_thread(processes.worker, own)
    try:
        await wait_for(lambda: "Starting worker" in worker.log())
        redis.stop()
        await wait_for(lambda: "reconnecting" in worker.log())
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        started = time.monotonic()
        await asyncio.to_thread(worker.stop)
        assert time.monotonic() - started < 5, "SIGTERM was not honoured while Redis was down"
        assert worker.proc.returncode == 0, worker.log()
    finally:
        await asyncio.to_thread(worker.kill)
        redis.stop()


# --- two workers ------------------------------------------------------------------------------


async def test_two_workers_never_deliver_a_row_twice(
    delivery: Delivery, env_vars: dict[str, str], sink: TimedSink, sessions: SessionMaker
) -> None:
    """Two workers on one queue, as in production, with small claims and a slow sink so that
    many jobs (wake-ups and sweeps, on either worker) want the same environment at once."""
    (big, _), (small, _) = await delivery.stream(), await delivery.stream()
    sink.delay = 0.05
    published = {
        big.id: await delivery.publish(big, tracks(1000)),
        small.id: await delivery.publish(small, tracks(200), chunk=20),
    }
    options = {"OUTBOX_CLAIM_LIMIT": "40"}

    async with running_worker(env_vars, **options), running_worker(env_vars, **options):
        for env_id in published:
            await wait_for(partial(all_delivered, sessions, env_id), timeout=60)

    assert sink.refused == []  # no retry was forced
    for env_id, ids in published.items():
        key = delivery.streams.keys[env_id]
        _exactly_once(sink.product_ids(key), ids)
        assert Counter(sink.message_ids(key)).most_common(1)[0][1] == 1  # platform event too
        assert {r.attempts for r in await outbox(sessions, env_id)} == {1}


# --- env test ---------------------------------------------------------------------------------


async def test_env_test_command(
    env_vars: dict[str, str], delivery: Delivery, sink: TimedSink
) -> None:
    good, good_key = await delivery.stream(stream=False)
    bad, _ = await delivery.stream(stream=False, known_key=False)
    closed, _ = await delivery.stream(stream=False, api_url=f"http://127.0.0.1:{free_port()}")

    names = [good.name, bad.name, closed.name, f"nope-{uuid.uuid4().hex[:6]}"]
    ok, rejected, unreachable, unknown = await asyncio.gather(
        *(cli(env_vars, "env", "test", name) for name in names)
    )

    assert ok.code == 0, ok
    assert ok.out.startswith(f"OK: Segment ({sink.url}) accepted the test event."), ok
    tested = sink.messages(good_key)
    assert [m["event"] for m in tested] == ["Segment Connection Tested"]
    assert tested[0]["properties"] == {"environment": good.name}

    assert rejected.code != 0, rejected
    assert "rejected the write key" in rejected.out, rejected
    assert unreachable.code != 0, unreachable
    assert "Could not reach Segment at" in unreachable.out, unreachable
    assert unknown.code != 0
    assert "no environment named" in unknown.out, unknown


async def test_tiny_events_go_in_batches_of_at_most_2500(
    delivery: Delivery, sink: TimedSink
) -> None:
    """Segment answers 200 to a batch of more than 2,500 events and drops it: 500 KB of tiny
    events would be about 4,000 of them."""
    env, key = await delivery.stream()
    run = uuid.uuid4().hex[:6]
    events = [
        {"type": "track", "userId": "u", "event": "E", "messageId": f"{run}{i}"}
        for i in range(6000)
    ]
    published = await delivery.publish(env, events, chunk=2000)

    await delivery.deliver(env, timeout=60, outbox_claim_limit=5000)

    assert sink.silently_dropped == 0
    _exactly_once(sink.product_ids(key), published)


async def test_sent_at_is_the_time_of_each_attempt(delivery: Delivery, sink: TimedSink) -> None:
    """Segment corrects event times with sentAt (timestamp = receivedAt - (sentAt -
    originalTimestamp)): a retry must carry the time it was sent, not the first attempt's."""
    env, key = await delivery.stream()
    sink.fail(503, times=2)
    published = await delivery.publish(env, tracks(5, run="sent-at"))

    await delivery.deliver(env)

    _exactly_once(sink.product_ids(key), published)
    attempts = [(arrived, sent, status) for arrived, sent, status in sink.sent_ats]
    assert [status for _, _, status in attempts] == [503, 503, 200]
    sent_times = [datetime.fromisoformat(sent or "") for _, sent, _ in attempts]
    assert sent_times == sorted(sent_times) and len(set(sent_times)) == 3
    for (arrived, _, _), sent_time in zip(attempts, sent_times, strict=True):
        assert abs(arrived - sent_time.timestamp()) < 1.0


async def test_publish_inside_the_product_wakes_the_worker_at_once(
    delivery: Delivery,
    settings: Settings,
    engine: AsyncEngine,
    sink: TimedSink,
    sessions: SessionMaker,
) -> None:
    """`publish()` in the product's own transaction, as the README shows it: the commit itself
    wakes delivery; nothing waits for the worker's periodic sweep (a minute apart here)."""
    (env, key), (warm, _) = await delivery.stream(), await delivery.stream()
    product_sessions = make_sessionmaker(engine, enqueue=Queue(settings).send)

    async def publish_in_product(env_id: uuid.UUID, run: str) -> list[str]:
        async with transaction(product_sessions) as session:
            target = await environments.get(session, env_id)
            return (await publish(session, target, tracks(3, run=run))).queued

    # Published before the worker runs: its sweep at startup delivers these, which shows the
    # worker is up and its sweep is behind it.
    await publish_in_product(warm.id, "warm-up")
    async with delivery.worker(outbox_sweep_seconds=60):
        await wait_for(lambda: all_delivered(sessions, warm.id), timeout=20)
        second = datetime.now(UTC).second
        if not 5 <= second <= 45:  # keep clear of the sweep at the turn of the minute
            await asyncio.sleep((65 - second) % 60)
        published = await publish_in_product(env.id, "in-product")
        started = time.monotonic()
        await wait_for(lambda: all_delivered(sessions, env.id), timeout=8)
        assert time.monotonic() - started < 3
    _exactly_once(sink.product_ids(key), published)
