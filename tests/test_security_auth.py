"""The admin token (issue #15.6): long enough or no start, failed attempts throttled per
client (429 with Retry-After) and logged with the client's address, never the token."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from integration.throttle import FailureThrottle
from tests import processes
from tests.conftest import ADMIN_TOKEN
from tests.processes import ROOT


def _start(
    env_vars: dict[str, str], command: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "integration", command],
        env={**env_vars, "PATH": "/usr/bin:/bin", **extra},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [("ADMIN_TOKEN", "a" * 31), ("SECRET_KEY", "s" * 31), ("SECRET_KEY", "é" * 15)],
)
def test_a_short_admin_token_or_secret_key_stops_the_start(
    env_vars: dict[str, str], setting: str, value: str
) -> None:
    for command in ("serve", "worker"):
        done = _start(env_vars, command, **{setting: value})
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert setting in out and "at least 32" in out, out
        assert "Traceback" not in out and value not in out, out


async def test_failed_admin_auth_is_throttled_per_client_and_logged(
    strict: processes.Process,
) -> None:
    wrong = [f"Bearer wrong-token-{i}-0123456789abcdef0123456789" for i in range(4)]
    good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=strict.url, timeout=10) as client:
        for token in wrong[:3]:
            response = await client.get("/api/environments", headers={"Authorization": token})
            assert response.status_code == 401
        throttled = await client.get("/api/environments", headers={"Authorization": wrong[3]})
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "too_many_failed_authentications"
        wait = int(throttled.headers["Retry-After"])
        assert 1 <= wait <= 2
        # The right token still passes: only failures are throttled (issue #20.3).
        assert (await client.get("/api/environments", headers=good)).status_code == 200

        # Another client (another loopback address) is not held up by this one.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=strict.url, timeout=10, transport=other) as c2:
            assert (await c2.get("/api/environments", headers=good)).status_code == 200

        await asyncio.sleep(wait)
        assert (await client.get("/api/environments", headers=good)).status_code == 200
        # Webhooks and operations routes are not behind the admin throttle.
        assert (await client.get("/healthz")).status_code == 200

    log = strict.log()
    assert log.count("admin authentication failed from 127.0.0.1") == 3
    for token in wrong:
        assert token.split()[1] not in log
    assert ADMIN_TOKEN not in log


def test_throttle_refills_and_remembers_a_bounded_number_of_clients() -> None:
    now = [0.0]
    throttle = FailureThrottle(2, 5.0, max_clients=100, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.retry_after("a") == 0
    throttle.failed("a")
    assert throttle.retry_after("a") == 5
    now[0] += 4.0
    assert throttle.retry_after("a") == 1
    now[0] += 1.0
    assert throttle.retry_after("a") == 0
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
