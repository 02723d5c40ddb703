"""Segment's own Node library, @segment/analytics-node (installed by `make js` from
tests/js/package-lock.json), run with node against the real server with `host` set to it:
every call reaches the Segment-like sink with the environment's Segment write key, once."""

from __future__ import annotations

import uuid

from integration.store.db import SessionMaker
from tests.harness import wait_for
from tests.intake_support import analytics_node, node_available, run_id
from tests.outbound_support import Delivery, TimedSink, outbox
from tests.processes import Process
from tests.segment_payloads import MakeEnv


async def _recorded(sessions: SessionMaker, env_id: uuid.UUID, ids: set[str]) -> bool:
    rows = {r.message_id: r.status for r in await outbox(sessions, env_id)}
    return all(rows.get(m) == "delivered" for m in ids)


async def test_analytics_node_publishes_through_us_to_segment(
    delivery: Delivery, sink: TimedSink, server: Process, sessions: SessionMaker
) -> None:
    node_available()
    env, segment_key = await delivery.stream()
    run = run_id()
    calls = [
        {"method": "identify", "args": {"userId": "n-1", "traits": {"plan": "pro"}}},
        {"method": "track", "args": {"userId": "n-1", "event": "Node Event", "properties": {}}},
        {"method": "page", "args": {"userId": "n-1", "name": "Docs"}},
        {"method": "screen", "args": {"userId": "n-1", "name": "Home"}},
        {"method": "group", "args": {"userId": "n-1", "groupId": "acme", "traits": {}}},
        {"method": "alias", "args": {"userId": "n-1", "previousId": "anon-n"}},
    ]
    calls += [
        {
            "method": "track",
            "args": {"userId": f"n-{i % 3}", "event": "Bulk", "properties": {"i": i}},
        }
        for i in range(60)
    ]
    for i, call in enumerate(calls):
        call["args"]["messageId"] = f"{run}-{i}"
    ids = {f"{run}-{i}" for i in range(len(calls))}

    async with delivery.worker():
        result = await analytics_node(server.url, env.source_write_key, calls, flushAt=25)
        assert result["errors"] == []
        assert result["requests"] and {r["url"] for r in result["requests"]} == {
            f"{server.url}/v1/batch"
        }
        await wait_for(lambda: _recorded(sessions, env.id, ids))

    arrived = [m for m in sink.messages(segment_key) if m["messageId"] in ids]
    assert sorted(m["messageId"] for m in arrived) == sorted(ids), "each once"
    assert {m["type"] for m in arrived} == {"identify", "track", "page", "screen", "group", "alias"}
    assert {m["context"]["library"]["name"] for m in arrived} == {"@segment/analytics-node"}
    assert all("writeKey" not in m and "sentAt" not in m for m in arrived)


async def test_analytics_node_is_told_a_wrong_key_is_wrong(
    server: Process, make_environment: MakeEnv
) -> None:
    node_available()
    await make_environment()
    calls = [{"method": "track", "args": {"userId": "n", "event": "Refused"}}]
    result = await analytics_node(server.url, "not-a-key-" + uuid.uuid4().hex, calls, maxRetries=0)
    assert result["errors"] and "401" in result["errors"][0]
