"""`make run`'s command on a clean folder: embedded Postgres and Redis, migrations, two
environments, the API and the worker, a banner with what a new user needs, and a clean stop.
A second start reuses the data folder and its keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from integration.embedded import free_port

pytestmark = pytest.mark.slow

CHILD_VARS = ("DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "SECRET_KEY", "PORT", "DATA_DIR")


def _start(folder: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_VARS}
    env |= {"PORT": str(port), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration", "run"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    banner = _read_banner(proc)
    return proc, banner


def _read_banner(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return "".join(lines)
    proc.kill()
    raise AssertionError("no banner from `integration run`:\n" + "".join(lines))


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API never became ready")


def _stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert proc.wait(60) == 0


def _webhooks(banner: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(staging|production)\s+(http://\S+)$", banner, re.M))


def _alive(pid_pattern: str) -> bool:
    out = subprocess.run(["pgrep", "-f", pid_pattern], capture_output=True, text=True)
    return bool(out.stdout.strip())


def test_run_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, banner = _start(tmp_path, port)
    try:
        assert "DATABASE_URL is not set: starting embedded Postgres" in banner
        assert "REDIS_URL is not set: starting embedded Redis" in banner
        token = re.search(r"Admin token:\s+(\S+)", banner)
        assert token, banner
        hooks = _webhooks(banner)
        assert set(hooks) == {"staging", "production"}
        _wait_ready(base)
        message = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1"}
        assert httpx.post(hooks["staging"], json=message).status_code == 200
        envs = httpx.get(
            f"{base}/api/environments", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).json()
        assert sorted(e["name"] for e in envs["items"]) == ["production", "staging"]
    finally:
        _stop(proc)
    assert not _alive(str(tmp_path / ".data" / "postgres")), "embedded Postgres still running"
    assert not _alive(str(tmp_path / ".data" / "redis")), "embedded Redis still running"
    assert not (tmp_path / ".data" / "runtime.env").exists()

    again, banner2 = _start(tmp_path, port)
    try:
        assert _webhooks(banner2) == hooks, "a second start must reuse the keys"
        assert re.search(r"Admin token:\s+(\S+)", banner2).group(1) == token.group(1)  # type: ignore[union-attr]
        _wait_ready(base)
        duplicate = httpx.post(hooks["staging"], json=message).json()
        assert duplicate == {"stored": 0, "duplicates": 1, "rejected": []}, "data must persist"
    finally:
        _stop(again)
