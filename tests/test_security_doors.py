"""The public doors under attack (issue #20): what an unauthenticated request can cost, and
throttles that slow failures without ever refusing a valid credential."""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from integration.config import Settings
from integration.embedded import start_postgres, start_redis
from integration.http import body
from integration.outbound.delivery import UNRECORDABLE
from integration.store.db import SessionMaker, make_engine
from integration.store.models import OutboxMessage
from tests import processes
from tests.conftest import ADMIN_TOKEN
from tests.harness import wait_for
from tests.intake_support import basic, segment_error
from tests.outbound_support import (
    Delivery,
    TimedSink,
    outbox,
    tracks,
)
from tests.segment_payloads import MakeEnv

KB = 1024
EMPTY_MEMBER = gzip.compress(b"", mtime=0)  # 20 bytes: a gzip member holding nothing
ZIPPED = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


def many_members(size: int) -> bytes:
    """`size` bytes of empty gzip members, one after another (the review's attack body)."""
    return EMPTY_MEMBER * (size // len(EMPTY_MEMBER))


def plain_gzip(size: int) -> bytes:
    """A JSON body with no key, inflating to about `size` bytes, as one gzip member."""
    return gzip.compress(b'{"batch":[' + b" " * size + b'{"event":"E"}]}')


async def timed(client: httpx.AsyncClient, content: bytes) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = await client.post("/v1/batch", content=content, headers=ZIPPED)
    return answer, time.perf_counter() - started


async def test_a_body_of_many_gzip_members_costs_no_more_than_a_plain_one(
    http: httpx.AsyncClient,
) -> None:
    attack = many_members(1000 * KB)  # ~51,000 members
    normal = plain_gzip(400 * KB)
    for _ in range(2):  # warm both paths: the first requests of a process are slower
        await timed(http, normal)
    refused, attack_seconds = await timed(http, attack)
    answer, normal_seconds = await timed(http, normal)
    assert "members" in segment_error(refused, 400, "invalid_gzip")["message"]
    segment_error(answer, 401, "missing_write_key")
    # The review measured 1.76 s for this body against 0.065 s for a plain one.
    assert attack_seconds < 0.5, (attack_seconds, normal_seconds)
    assert attack_seconds < 5 * normal_seconds + 0.1, (attack_seconds, normal_seconds)


def _cpu_seconds(data: bytes) -> float:
    """The least CPU time of three inflations of `data` (the thread's own: other processes on
    the machine do not count)."""
    runs = []
    for _ in range(3):
        started = time.thread_time()
        body.gunzip(data, 4 * 1024 * KB)
        runs.append(time.thread_time() - started)
    return min(runs)


def test_inflating_many_members_is_linear_in_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the member cap, the work per member must still be constant: 4 times the members
    # cost about 4 times as much, not 16 (each member once copied the rest of the body).
    monkeypatch.setattr(body, "MAX_GZIP_MEMBERS", 10**9)
    quarter, whole = _cpu_seconds(many_members(256 * KB)), _cpu_seconds(many_members(1024 * KB))
    assert whole < 8 * quarter + 0.01, (quarter, whole)


def test_gzip_members_are_inflated_in_order_up_to_the_cap() -> None:
    parts = [f"part {i};".encode() * (i * 500 + 1) for i in range(body.MAX_GZIP_MEMBERS)]
    joined = b"".join(gzip.compress(p) for p in parts)
    assert body.gunzip(joined, 10 * 1024 * KB) == b"".join(parts)
    with pytest.raises(body.BadRequest, match="members"):
        body.gunzip(joined + EMPTY_MEMBER, 10 * 1024 * KB)


@pytest.fixture
def strict_doors(env_vars: dict[str, str]) -> Iterator[processes.Process]:
    """A server of its own with small failure budgets: 3 at once for each door, the admin
    token's refilled once a minute (not every second, as `strict`'s), so that what a test
    spends stays spent while it looks."""
    server = processes.serve(
        env_vars,
        ADMIN_AUTH_BURST="3",
        ADMIN_AUTH_REFILL_SECONDS="60",
        AUTH_FAILURES_PER_MINUTE="3",
    )
    yield server
    server.stop()


def track(write_key: str | None = None) -> dict[str, object]:
    message: dict[str, object] = {"type": "track", "userId": f"u-{uuid.uuid4().hex[:8]}"}
    message["event"] = "Clicked"
    return message | ({"writeKey": write_key} if write_key else {})


async def test_keyless_intake_calls_count_as_failures(
    strict_doors: processes.Process, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with httpx.AsyncClient(base_url=strict_doors.url, timeout=10) as client:
        # No key, a body with no readable key, and the many-members gzip: each is a failure.
        segment_error(await client.post("/v1/track", json=track()), 401, "missing_write_key")
        segment_error(await client.post("/v1/track", content=b"{not json"), 400, "invalid_json")
        attack = await client.post("/v1/batch", content=many_members(100 * KB), headers=ZIPPED)
        segment_error(attack, 400, "invalid_gzip")
        refused = await client.post("/v1/track", json=track())
        segment_error(refused, 429, "too_many_failures")
        assert int(refused.headers["retry-after"]) >= 1
        zipped = gzip.compress(b'{"event":"E","userId":"u"}')
        again = await client.post("/v1/track", content=zipped, headers=ZIPPED)
        segment_error(again, 429, "too_many_failures")
        # A write key in the body or in the header still publishes from this address.
        ok = await client.post("/v1/track", json=track(env.source_write_key))
        assert ok.status_code == 200, ok.text
        ok = await client.post("/v1/track", json=track(), headers=basic(env.source_write_key))
        assert ok.status_code == 200, ok.text


async def test_valid_credentials_pass_after_the_failure_budget_is_spent(
    strict_doors: processes.Process, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    wrong_admin = {"Authorization": f"Bearer sik_wrong{uuid.uuid4().hex}"}
    async with httpx.AsyncClient(base_url=strict_doors.url, timeout=10) as client:
        created = await client.post(
            f"/api/environments/{env.id}/api-keys",
            json={"name": "publisher", "scopes": ["publish"]},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        publisher = {"Authorization": f"Bearer {created.json()['key']}"}
        # Every budget spent from this address, and then some.
        for _ in range(8):
            await client.get("/api/environments", headers=wrong_admin)
            await client.post("/webhooks/segment/guess", json=track())
            await client.post("/v1/track", json=track(), headers=basic("guess"))
        assert (await client.get("/api/environments", headers=wrong_admin)).status_code == 429
        assert (await client.post("/webhooks/segment/guess", json=track())).status_code == 429
        guess = await client.post("/v1/track", json=track(), headers=basic("guess"))
        segment_error(guess, 429, "too_many_failures")

        # A webhook key rotated just now, never used from anywhere: it passes.
        rotated = await client.post(
            f"/api/environments/{env.id}/rotate-webhook-key?grace_seconds=0", headers=admin
        )
        assert rotated.status_code == 200, rotated.text
        hook = f"/webhooks/segment/{rotated.json()['webhook_key']}"
        stored = await client.post(hook, json=track())
        assert stored.status_code == 200, stored.text
        # The publish API key and the admin token pass too.
        published = await client.post(
            f"/api/environments/{env.id}/product-events", json=track(), headers=publisher
        )
        assert published.status_code == 202, published.text
        assert (await client.get("/api/environments", headers=admin)).status_code == 200
        # The old webhook key is now just another failure.
        assert (await client.post(env.webhook_path, json=track())).status_code == 429


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """`command` run as another local user (`nobody`): what any account on the machine can do."""
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_embedded_servers_refuse_the_machine_s_other_users(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another user")
    data = tmp_path / ".data"
    data.mkdir(mode=0o700)
    tmp_path.chmod(0o755)  # the attacker may reach the folder above, as under a home
    password = secrets.token_urlsafe(32)
    redis = start_redis(data / "redis", persist=False, password=password)
    postgres = start_postgres(data / "postgres", owned=True, password=password)
    try:
        # Private: no other user may list or enter it (as root, Postgres runs as a user of
        # its own, whose group may pass through it to reach its own folder).
        assert data.stat().st_mode & 0o007 == 0
        assert as_nobody("ls", str(data)).returncode != 0
        assert (data / "redis").stat().st_mode & 0o777 == 0o700
        assert (data / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
        port = str(urlsplit(redis.url).port)

        # Redis: no AUTH, no command; and CONFIG / MODULE / DEBUG are gone even with it.
        for command in (["SET", "planted", "job"], ["CONFIG", "SET", "dir", "/"]):
            attempt = as_nobody("redis-cli", "-h", "127.0.0.1", "-p", port, *command)
            said = attempt.stdout + attempt.stderr
            assert "NOAUTH" in said or "unknown command" in said, attempt
            assert "OK" not in said, attempt
        owner = Redis.from_url(redis.url)
        try:
            for command in (["CONFIG", "GET", "dir"], ["MODULE", "LIST"], ["DEBUG", "SLEEP", "0"]):
                with pytest.raises(ResponseError, match="unknown command"):
                    owner.execute_command(*command)
            assert owner.ping() is True
        finally:
            owner.close()
        assert password not in (data / "redis" / "redis.log").read_text()

        # Postgres: its socket, without the password, is refused (and there is no TCP port).
        query = parse_qs(urlsplit(postgres.url).query)
        conninfo = f"host={query['host'][0]} user=postgres dbname=postgres connect_timeout=5"
        attempt = as_nobody("psql", conninfo, "-w", "-c", "SELECT 1")
        assert attempt.returncode != 0, attempt
        assert "1 row" not in attempt.stdout
        owner = subprocess.run(
            ["psql", postgres.url, "-w", "-Atc", "SELECT 1"], capture_output=True, text=True
        )
        assert owner.stdout.strip() == "1", owner
        # Even as the owner, the socket without the password is refused now.
        bare = subprocess.run(
            ["psql", conninfo, "-w", "-Atc", "SELECT 1"], capture_output=True, text=True
        )
        assert bare.returncode != 0 and "password" in bare.stderr, bare
    finally:
        redis.stop()
        postgres.stop()


@pytest.mark.parametrize("value", ["inf", "1e30", "-5", "garbage", "nan"])
async def test_an_absurd_retry_after_waits_no_longer_than_the_backoff_cap(
    delivery: Delivery,
    settings: Settings,
    sink: TimedSink,
    sessions: SessionMaker,
    value: str,
) -> None:
    env, key = await delivery.stream()
    sink.fail(503, retry_after=value)
    published = await delivery.publish(env, tracks(3, run=f"retry-after-{value}"))
    await delivery.deliver(env, timeout=20, outbox_backoff_cap_seconds=2.0)
    assert sorted(sink.product_ids(key)) == sorted(published)
    refused_at = next(t for t, status in sink.answers if status == 503)
    delivered_at = max(t for t, k, _ in sink.arrivals if k == key)
    # The failed attempt was recorded (a second one delivered), within the cap plus a sweep.
    # The slack is wide because a busy CI machine is slow; an obeyed absurd value waits for
    # ever, so any bound of seconds tells the two apart.
    assert {r.attempts for r in await outbox(sessions, env.id)} == {2}
    assert delivered_at - refused_at < 2.0 + settings.outbox_sweep_seconds + 8


async def test_an_answer_that_cannot_be_recorded_still_ends_dead(
    delivery: Delivery, sink: TimedSink, sessions: SessionMaker
) -> None:
    # A NUL character: Postgres text cannot hold it, so the answer cannot be stored as sent.
    env, _ = await delivery.stream()
    sink.fail(503, times=1000, message="down\u0000for good")
    await delivery.publish(env, tracks(2, run="unrecordable"))
    changes = {"outbox_backoff_cap_seconds": 0.3, "outbox_max_age_seconds": 2}
    async with delivery.worker(**changes):
        rows = await wait_for(lambda: _all_dead(sessions, env.id), timeout=20)
    assert {r.last_error for r in rows} == {UNRECORDABLE}
    assert all(r.attempts >= 2 for r in rows)


async def _all_dead(sessions: SessionMaker, env_id: uuid.UUID) -> list[OutboxMessage] | None:
    rows = await outbox(sessions, env_id)
    return rows if rows and {r.status for r in rows} == {"dead"} else None


async def test_a_failed_statement_does_not_carry_its_parameters(settings: Settings) -> None:
    # The statement that once failed on Retry-After: inf, with a payload beside it.
    engine = make_engine(settings, pool_size=1)
    secret = f"trait-{uuid.uuid4().hex}"
    failing = text("SELECT clock_timestamp() + make_interval(secs => CAST(:s AS float8)), :t")
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(failing, {"s": float("inf"), "t": secret})
    finally:
        await engine.dispose()
    assert secret not in str(failed.value)
    assert "parameters hidden" in str(failed.value)


async def test_a_v1_batch_is_capped_and_its_answer_bounded(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    key = basic(env.source_write_key)
    # The review's body: 0.5 MB of empty messages (some 170,000), refused before any is read.
    empties = b'{"batch":[' + b",".join([b"{}"] * 165 * KB) + b"]}"
    assert len(empties) < 500 * KB
    refused = await http.post("/v1/batch", content=empties, headers=key)
    assert "4000" in segment_error(refused, 400, "too_many_messages")["message"]
    assert len(refused.content) < 1 * KB

    # Up to the cap, every refusal is counted, the first 100 listed, the valid one kept.
    valid = {"type": "track", "event": "Kept", "userId": "u-kept"}
    mixed = {"batch": [{}] * 3999 + [valid]}
    answer = await http.post("/v1/batch", json=mixed, headers=key)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["rejected_count"] == 3999
    assert [r["index"] for r in body["rejected"]] == list(range(100))
    assert len(answer.content) < 20 * KB

    nothing = await http.post("/v1/batch", json={"batch": [{}] * 4000}, headers=key)
    refusal = segment_error(nothing, 400, "invalid_batch")
    assert refusal["rejected_count"] == 4000 and len(refusal["rejected"]) == 100
    assert len(nothing.content) < 20 * KB


async def test_metrics_count_unknown_methods_as_other(http: httpx.AsyncClient) -> None:
    verb = f"PROBE{uuid.uuid4().hex[:6].upper()}"
    for method in ("PROPFIND", verb):
        await http.request(method, "/healthz")
    metrics = (await http.get("/metrics")).text
    assert "PROPFIND" not in metrics and verb not in metrics
    assert 'method="other"' in metrics
