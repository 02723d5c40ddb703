"""Outbound metrics: the outbox's state on the API's /metrics, the worker's delivery counters
on its own port (WORKER_METRICS_PORT)."""

from __future__ import annotations

import re

import httpx

from integration.embedded import free_port
from integration.store.db import SessionMaker
from tests.conftest import wait_for
from tests.outbound_support import (
    Delivery,
    all_delivered,
    running_worker,
    tracks,
)

UNREACHABLE = "http://127.0.0.1:9"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_api_metrics_count_the_outbox_by_status(
    http: httpx.AsyncClient, delivery: Delivery
) -> None:
    before = sample(
        (await http.get("/metrics")).text, "integration_outbox_messages", status="pending"
    )
    env, _ = await delivery.stream(api_url=UNREACHABLE)
    await delivery.publish(env, tracks(3))
    text = (await http.get("/metrics")).text
    # +1: turning the stream on queued the platform's own "Segment Stream Enabled" event.
    assert sample(text, "integration_outbox_messages", status="pending") >= before + 3
    assert 'integration_outbox_messages{status="dead"}' in text
    assert 'integration_outbox_messages{status="delivered"}' in text


async def test_worker_serves_its_delivery_metrics(
    delivery: Delivery, env_vars: dict[str, str], sessions: SessionMaker
) -> None:
    env, _ = await delivery.stream()
    port = free_port()
    await delivery.publish(env, tracks(20))
    async with running_worker(env_vars, WORKER_METRICS_PORT=str(port)):
        await wait_for(lambda: all_delivered(sessions, env.id))
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert sample(text, "integration_segment_responses_total", code="200") >= 1
    assert sample(text, "integration_delivery_latency_seconds_count") >= 20
