"""Running at scale: retention that expires in bounded batches, activity counts that stay
right as they are folded, a schema a distributed Postgres can shard by environment, and several
API processes and workers against one database delivering every event once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import UniqueConstraint, text

from integration.config import Settings
from integration.inbound import retention
from integration.store import activity
from integration.store.db import SessionMaker, transaction
from integration.store.models import Base
from tests import processes
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.outbound_support import (
    Streams,
    TimedSink,
    cli,
    in_process_worker,
    publish_http,
    running_worker,
    statuses,
    tracks,
)
from tests.segment_payloads import MakeEnv, new_id, track


async def age_events(sessions: SessionMaker, env_id: object, days: int, count: int) -> None:
    """Store `count` events whose message time is `days` old (written as an operator would)."""
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO events (environment_id, message_id, type, name, timestamp)"
                " SELECT :e, 'old-' || CAST(:d AS int) || '-' || g, 'track', 'Old',"
                " now() - make_interval(days => CAST(:d AS int))"
                " FROM generate_series(1, :n) AS g"
            ),
            {"e": env_id, "d": days, "n": count},
        )


async def stats(admin: httpx.AsyncClient, env_id: object) -> dict[str, object]:
    response = await admin.get(f"/api/environments/{env_id}/stats")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_retention_expires_old_events_in_bounded_batches_and_keeps_the_rest(
    admin: httpx.AsyncClient,
    http: httpx.AsyncClient,
    env_vars: dict[str, str],
    make_environment: MakeEnv,
    sessions: SessionMaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, other = await make_environment(), await make_environment()
    await age_events(sessions, env.id, 40, 25)
    await age_events(sessions, other.id, 40, 5)
    fresh = track(new_id("user"), "Clicked", when=datetime.now(UTC))
    assert (await http.post(env.webhook_path, json=fresh)).status_code == 200
    assert (await stats(admin, env.id))["events_total"] == 26

    result = await cli(env_vars, "env", "set", env.name, "--retention-days", "30")
    assert result.code == 0, result
    assert (await admin.get(f"/api/environments/{env.id}")).json()["retention_days"] == 30

    monkeypatch.setattr(retention, "BATCH", 10)  # 25 rows: three bounded batches
    assert await retention.expire(sessions, env.id, 30) == 25
    names = [
        e["name"] for e in (await admin.get(f"/api/environments/{env.id}/events")).json()["items"]
    ]
    assert names == ["Clicked"]
    assert (await stats(admin, env.id))["events_total"] == 1
    assert (await stats(admin, other.id))["events_total"] == 5  # no retention there

    # Back to keeping everything.
    off = await admin.patch(f"/api/environments/{env.id}", json={"retention_days": None})
    assert off.status_code == 200 and off.json()["retention_days"] is None


async def test_the_worker_expires_events_and_reports_the_oldest_kept(
    admin: httpx.AsyncClient,
    settings: Settings,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(retention_days=7)
    await age_events(sessions, env.id, 10, 3)
    await age_events(sessions, env.id, 3, 2)
    async with in_process_worker(settings):
        await wait_for(lambda: _total(admin, env.id, 2), timeout=20)
    name = (await admin.get(f"/api/environments/{env.id}")).json()["name"]
    expired = REGISTRY.get_sample_value("integration_events_expired_total", {"environment": name})
    oldest = REGISTRY.get_sample_value(
        "integration_events_oldest_timestamp_seconds", {"environment": name}
    )
    assert expired == 3
    assert oldest is not None
    assert (datetime.now(UTC) - timedelta(days=3, minutes=5)).timestamp() < oldest


async def _total(admin: httpx.AsyncClient, env_id: object, want: int) -> bool:
    return (await stats(admin, env_id))["events_total"] == want


async def test_folding_old_minutes_into_days_keeps_every_total(
    admin: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO activity_counts (environment_id, bucket, slot, inbound, delivered,"
                " last_inbound_at) SELECT :e, date_trunc('minute', now())"
                " - make_interval(days => d, mins => m), s, 2, 1, now() - make_interval(days => d)"
                " FROM generate_series(0, 5) d, generate_series(0, 3) m, generate_series(0, 2) s"
            ),
            {"e": env.id},
        )
    before = await stats(admin, env.id)
    await activity.fold(sessions)
    after = await stats(admin, env.id)
    assert before == after
    assert after["events_total"] == 6 * 4 * 3 * 2
    async with sessions() as session:
        rows = await session.scalar(
            text("SELECT count(*) FROM activity_counts WHERE environment_id = :e"), {"e": env.id}
        )
    assert rows is not None and rows < 6 * 4 * 3  # the old days are one row each now


def test_every_environment_keyed_table_can_be_sharded_by_environment_id() -> None:
    """Citus distributes a table by a column only if every primary and unique key contains
    it. The small tables looked up by a key's digest across environments (environments,
    api_keys, previous_keys) and system_state would be reference tables, copied to every
    node."""
    reference = {"environments", "system_state", "api_keys", "previous_keys"}
    for table in Base.metadata.tables.values():
        if table.name in reference:
            continue
        assert "environment_id" in table.c, table.name
        uniques = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
        for key in [table.primary_key, *uniques]:
            assert "environment_id" in [c.name for c in key.columns], (table.name, key.name)


async def test_two_api_processes_and_two_workers_deliver_every_event_once(
    env_vars: dict[str, str], streams: Streams, sink: TimedSink, sessions: SessionMaker
) -> None:
    env = await streams()
    apis = await asyncio.gather(
        asyncio.to_thread(processes.serve, env_vars), asyncio.to_thread(processes.serve, env_vars)
    )
    published: list[str] = []
    try:
        async with running_worker(env_vars), running_worker(env_vars):
            for n, api in enumerate(apis * 3):
                async with httpx.AsyncClient(
                    base_url=api.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                ) as client:
                    published += await publish_http(client, env.id, tracks(200, run=f"two-{n}"))
            await wait_for(lambda: _delivered(sessions, env.id), timeout=60)
    finally:
        await asyncio.gather(*(asyncio.to_thread(api.stop) for api in apis))
    received = Counter(sink.product_ids(streams.keys[env.id]))
    assert set(received) == set(published)
    assert max(received.values()) == 1


async def _delivered(sessions: SessionMaker, env_id: object) -> bool:
    counts = await statuses(sessions, env_id)  # type: ignore[arg-type]
    return set(counts) == {"delivered"}
