"""`make run`'s command on a clean folder: embedded Postgres and Redis, migrations, two
environments, the API and the worker, a banner with what a new user needs, and a clean stop.
A second start reuses the data folder and its keys.

And what a user does to it: starts it on another port, starts it twice, closes its terminal
(SIGHUP), kills it (SIGKILL) and starts it again. Each test has a data folder of its own (the
run's working directory) and a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from integration.embedded import free_port
from integration.rundir import alive, read_pid, terminate
from integration.runner import OLD_KEY_FILES

pytestmark = pytest.mark.slow

CHILD_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "ADMIN_TOKEN",
    "SECRET_KEY",
    "PORT",
    "HOST",
    "DATA_DIR",
    "PUBLIC_BASE_URL",
)
SECRET_FILES = ("secrets.json", "runtime.env")


def _env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_VARS}
    return env | {"PORT": str(port), **extra}


def _start(
    folder: Path, port: int, public_base_url: str | None = None, **extra: str
) -> tuple[subprocess.Popen[str], str]:
    """`python -m integration run` in `folder` (its data folder is folder/.data), as `make
    run` starts it, in a session of its own as a terminal's job is; its banner. `extra`:
    more environment variables."""
    if public_base_url:
        extra["PUBLIC_BASE_URL"] = public_base_url
    with (folder / "run-stderr.log").open("a") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "integration", "run"],
            cwd=folder,
            env=_env(port, **extra),
            stdout=subprocess.PIPE,
            stderr=stderr,
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
    return dict(re.findall(r"^\s+(staging|production)\s+(https?://\S+)$", banner, re.M))


def _source_keys(banner: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(staging|production)\s+([A-Za-z0-9]{32})$", banner, re.M))


def _forget_source_key(data: Path, name: str) -> None:
    """Make `name` an environment from before the intake: no source write key at all."""
    settings = dict(
        line.split("=", 1) for line in (data / "runtime.env").read_text().splitlines() if line
    )
    url = settings["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)

    async def forget() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "UPDATE environments SET source_write_key_hash = NULL,"
                " source_write_key_hint = NULL WHERE name = $1",
                name,
            )
        finally:
            await conn.close()

    asyncio.run(forget())


def _pids(data: Path) -> dict[str, int]:
    """What the run started, from its pid files (read while it runs: a clean stop removes them)."""
    files = {
        "API": data / "serve.pid",
        "worker": data / "worker.pid",
        "Redis": data / "redis" / "redis-server.pid",
        "Postgres": data / "postgres" / "postmaster.pid",
    }
    pids = {name: read_pid(path) for name, path in files.items()}
    assert all(pids.values()), pids
    return {name: pid for name, pid in pids.items() if pid}


def _still_running(pids: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + 5  # an orphan's exit may take a moment to show in /proc
    while time.monotonic() < deadline:
        running = {name: pid for name, pid in pids.items() if alive(pid)}
        if not running:
            break
        time.sleep(0.1)
    return running


def _run_once(folder: Path, port: int) -> subprocess.CompletedProcess[str]:
    """A run expected to refuse at once; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "integration", "run"],
        cwd=folder,
        env=_env(port),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    public = "https://hooks.example.test"  # what Segment would call, through a proxy
    proc, banner = _start(tmp_path, port, public)
    try:
        assert "DATABASE_URL is not set: starting embedded Postgres" in banner
        assert "REDIS_URL is not set: starting embedded Redis" in banner
        assert f"API:          {base}   (docs: {base}/docs" in banner
        token = re.search(r"Admin token:\s+(\S+)", banner)
        assert token, banner
        hooks = _webhooks(banner)
        assert set(hooks) == {"staging", "production"}
        assert all(url.startswith(f"{public}/webhooks/segment/") for url in hooks.values())
        _wait_ready(base)
        message = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1"}
        staging = base + urlsplit(hooks["staging"]).path
        assert httpx.post(staging, json=message).status_code == 200
        envs = httpx.get(
            f"{base}/api/environments", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).json()
        assert sorted(e["name"] for e in envs["items"]) == ["production", "staging"]
        # Each environment's source write key, for Segment's libraries: host is this server.
        sources = _source_keys(banner)
        assert set(sources) == {"staging", "production"}, banner
        assert f"host {public}" in banner
        call = {"userId": "u1", "event": "Through Us"}
        answer = httpx.post(f"{base}/v1/track", json=call, auth=(sources["staging"], ""))
        assert answer.status_code == 200 and answer.json()["success"] is True, answer.text
        _forget_source_key(tmp_path / ".data", "production")
        pids = _pids(tmp_path / ".data")
    finally:
        _stop(proc)
    assert _still_running(pids) == {}
    assert not (tmp_path / ".data" / "runtime.env").exists()

    # No key is kept in plain text but the ones the run needs (secrets.json).
    assert not any((tmp_path / ".data" / name).exists() for name in OLD_KEY_FILES)
    kept = b"".join(path.read_bytes() for path in (tmp_path / ".data").glob("*.json"))
    assert not any(key.encode() in kept for key in [*hooks.values(), *sources.values()])

    again, banner2 = _start(tmp_path, port, public)
    try:
        # A second start reuses the keys and shows only their last characters (issue #20).
        assert _webhooks(banner2) == {}, banner2
        for name in ("staging", "production"):
            assert re.search(rf"^\s+{name}\s+…{hooks[name][-4:]} \(its last", banner2, re.M)
            assert hooks[name] not in banner2
        assert token.group(1) not in banner2
        assert re.search(r"Admin token:\s+(\S+)", banner2).group(1) == "…" + token.group(1)[-4:]  # type: ignore[union-attr]
        # The environment without a source write key (one from before the intake) got one,
        # shown whole: this start made it.
        sources2 = _source_keys(banner2)
        assert set(sources2) == {"production"} and sources2["production"] != sources["production"]
        assert f"staging      …{sources['staging'][-4:]} (its last" in banner2, banner2
        _wait_ready(base)
        duplicate = httpx.post(staging, json=message).json()
        assert duplicate == {"stored": 0, "duplicates": 1, "rejected": []}, "data must persist"
        for key in (sources["staging"], sources2["production"]):
            answer = httpx.post(f"{base}/v1/track", json=call, auth=(key, ""))
            assert answer.status_code == 200, answer.text
    finally:
        _stop(again)


def test_another_port_a_second_run_private_files_and_a_closed_terminal(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / ".data"
    proc, banner = _start(tmp_path, port)  # no PUBLIC_BASE_URL: the bind address it is
    try:
        urls = re.findall(r"https?://[^\s)']+", banner)
        assert len(urls) >= 6, banner  # API, docs, health, two webhooks, the curl example
        assert all(
            u.startswith(f"http://127.0.0.1:{port}/") or u == f"http://127.0.0.1:{port}"
            for u in urls
        ), urls
        for name in SECRET_FILES:
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
        runtime_env = (data / "runtime.env").read_bytes()
        assert f"PUBLIC_BASE_URL=http://127.0.0.1:{port}\n".encode() in runtime_env
        # The folder itself is private too, with its servers running (issue #20.2).
        # (0710 as root: the group of pgserver's Postgres user may pass through to its folder.)
        assert data.stat().st_mode & 0o777 == (0o710 if os.geteuid() == 0 else 0o700)
        for name in ("DATABASE_URL", "REDIS_URL"):
            assert f"{name}=" in runtime_env.decode() and ":@" not in runtime_env.decode()

        # A second run from the same folder: refused in plain words, the first untouched.
        second = _run_once(tmp_path, port)
        said = second.stdout + second.stderr
        assert second.returncode != 0, said
        assert "already running from this data folder" in said, said
        assert f"pid {proc.pid}" in said, said
        assert "Segment integration is running" not in said
        assert "Traceback" not in said and '"level"' not in said, said
        assert (data / "runtime.env").read_bytes() == runtime_env
        _wait_ready(f"http://127.0.0.1:{port}")

        # From another folder on the same port: the port is named, nothing is started.
        other = tmp_path / "other"
        other.mkdir()
        third = _run_once(other, port)
        said = third.stdout + third.stderr
        assert third.returncode != 0, said
        assert f"port {port} on 127.0.0.1 is already in use" in said, said
        assert not (other / ".data" / "postgres").exists()
        pids = _pids(data)
    except BaseException:
        _stop(proc)
        raise

    # The terminal closes: the runner gets SIGHUP and stops everything it started.
    os.kill(proc.pid, signal.SIGHUP)
    assert proc.wait(60) == 0
    assert _still_running(pids) == {}
    assert not (data / "runtime.env").exists()


def test_after_the_runner_is_killed_the_next_runs_clean_up_and_work(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / ".data"
    first, first_banner = _start(tmp_path, port)
    orphans = _pids(data)
    first.kill()  # SIGKILL: no cleanup; the servers and children are orphans now
    first.wait(10)
    try:
        assert _still_running(orphans) != {}, "nothing was left running to clean up"

        second, banner = _start(tmp_path, port)
        try:
            found = re.search(r"^An earlier run in \.data did not stop cleanly.*$", banner, re.M)
            assert found, banner
            for name, pid in orphans.items():
                assert f"{name} (pid {pid})" in found.group(0)
            assert _still_running(orphans) == {}
            _wait_ready(f"http://127.0.0.1:{port}")
            hooks = _webhooks(first_banner)  # made then: later banners show their ends
            message = {"type": "track", "userId": "u1", "event": "Again", "messageId": "m-2"}
            assert httpx.post(hooks["staging"], json=message).status_code == 200
            second_pids = _pids(data)
        finally:
            _stop(second)
        assert _still_running(second_pids) == {}, "Ctrl-C left servers running"
    finally:
        for pid in _still_running(orphans).values():  # never leave a failed test's orphans
            os.kill(pid, signal.SIGKILL)

    third, banner = _start(tmp_path, port)
    try:
        assert "did not stop cleanly" not in banner
        _wait_ready(f"http://127.0.0.1:{port}")
        third_pids = _pids(data)
    finally:
        _stop(third)
    assert _still_running(third_pids) == {}, "Ctrl-C left servers running"
    assert not (data / "runtime.env").exists()


def _in_a_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """`args` as the leader of a new session whose controlling terminal is a new pty, as sshd
    starts `ssh -t host make run`; the pty's master side (closing it hangs the terminal up)."""
    master, slave = pty.openpty()

    def take_terminal() -> None:  # in the child, after setsid (start_new_session)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        args,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    return proc, master


def _read_terminal(master: int, until: str, timeout: float = 120) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while until.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            seen += os.read(master, 65536)
    assert until.encode() in seen, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def test_a_hangup_that_reaches_only_make_stops_everything(tmp_path: Path) -> None:
    """`ssh -t host make run` whose connection drops: the terminal hangs up, the kernel sends
    SIGHUP to `make` (the session's leader) alone, and `make` waits for the runner."""
    port = free_port()
    data = tmp_path / ".data"
    root = Path(__file__).resolve().parent.parent
    make, master = _in_a_terminal(
        ["make", "--no-print-directory", "-C", str(root), "run"], _env(port, DATA_DIR=str(data))
    )
    try:
        _read_terminal(master, "Press Ctrl-C to stop.")
        pids = _pids(data)
        runner = read_pid(data / "run.lock")
        assert runner and runner != make.pid
    except BaseException:
        os.killpg(make.pid, signal.SIGINT)
        os.close(master)
        raise
    os.close(master)  # the connection drops
    try:
        make.wait(60)
        assert not alive(runner), "the runner goes on after its terminal hung up"
        assert _still_running(pids) == {}
        assert not (data / "runtime.env").exists()
    finally:  # a failed test leaves nothing running: the runner stops what it started
        if alive(runner):
            terminate(runner, timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)


def _two_ports_held() -> tuple[int, list[socket.socket]]:
    """A port and the next one, both held by this test: another test (or xdist worker) may hold
    port + 1 of a port that was free a moment ago, so try until both bind."""
    for _ in range(50):
        port = free_port()
        held: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                held.append(socket.create_server(("127.0.0.1", p)))
        except OSError:
            for server in held:
                server.close()
            continue
        return port, held
    raise RuntimeError("no two adjacent free ports")


def test_the_hints_name_a_port_that_is_free(tmp_path: Path) -> None:
    port, taken = _two_ports_held()
    try:
        refused = _run_once(tmp_path, port)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and f"port {port} on 127.0.0.1 is already in use" in said
        hint = re.search(r"PORT=(\d+) make run", said)
        assert hint and int(hint.group(1)) > port + 1, said  # port + 1 is taken too
    finally:
        for server in taken:
            server.close()


def test_an_invalid_log_level_is_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "integration", "run"],
        cwd=tmp_path,
        env=_env(free_port(), LOG_LEVEL="verbose"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, said
    assert said.splitlines() == [
        "make run: invalid settings: LOG_LEVEL: Value error, must be one of DEBUG, INFO,"
        " WARNING, ERROR, CRITICAL"
    ], said
    assert not (tmp_path / ".data" / "postgres").exists()
