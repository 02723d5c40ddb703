"""`make run`: everything a new user needs, in one command.

Embedded Postgres and Redis under the data folder unless DATABASE_URL / REDIS_URL are set,
migrations, `staging` and `production` on first start, then the API and the worker as child
processes. Secrets generated on first start are kept in the data folder (mode 0600 from
creation) so that a second start reuses them, webhook keys and source write keys included. An
environment made before the /v1 intake existed gets its source write key here, on the first
start that finds it without one, and the banner shows it.

One run per data folder: a run holds the folder's lock (integration.rundir) for its life, and
a second one started meanwhile says so and exits without touching anything. Ctrl-C, SIGTERM
and SIGHUP (the terminal closing) all stop everything it started. A run that could not clean
up (SIGKILL, a crash) leaves pid files; the next run stops what they name, if it still runs,
before starting anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson

from integration.config import (
    ConfigError,
    Settings,
    process_settings,
    runs_registry,
    runtime_env_path,
)
from integration.crypto import hash_key
from integration.embedded import (
    Embedded,
    postgres_record,
    redis_record,
    start_postgres,
    start_redis,
)
from integration.environments import service as environments
from integration.rundir import (
    AlreadyRunning,
    Recorded,
    command_line,
    hold_lock,
    register,
    write_pid,
    write_private,
)
from integration.store.db import make_engine, make_sessionmaker, transaction

DEFAULT_ENVIRONMENTS = ("staging", "production")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READY_SECONDS = 60


class _Stop(BaseException):
    """A signal asked the run to stop. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it."""


class _Failed(Exception):
    """The run cannot go on; the message says why, in plain words."""


def _say(*lines: str, error: bool = False) -> None:
    """Print, unless the terminal is gone (after SIGHUP it is): a failed print must not cut
    the cleanup short."""
    with contextlib.suppress(OSError):
        print(*lines, sep="\n", file=sys.stderr if error else sys.stdout, flush=True)


# --- files of the data folder --------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    write_private(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _local_secrets(settings: Settings, data: Path) -> dict[str, str]:
    path = data / "secrets.json"
    stored = _load(path)
    stored.setdefault("admin_token", secrets.token_urlsafe(24))
    stored.setdefault("secret_key", secrets.token_urlsafe(32))
    _save(path, stored)
    return {
        "ADMIN_TOKEN": settings.admin_token or stored["admin_token"],
        "SECRET_KEY": settings.secret_key or stored["secret_key"],
    }


def _write_runtime_env(data: Path, env_vars: dict[str, str]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in env_vars.items())
    write_private(runtime_env_path(str(data)), text.encode())


# --- what a run starts, and what a dead run left --------------------------------------------


def _child_record(data: Path, command: str, name: str) -> Recorded:
    def recognise(pid: int) -> bool:
        return f"-m integration {command}" in command_line(pid)

    return Recorded(name, data / f"{command}.pid", recognise)


def _records(data: Path) -> list[Recorded]:
    """Everything a run records, in the order to stop it: users before servers."""
    return [
        _child_record(data, "serve", "API"),
        _child_record(data, "worker", "worker"),
        redis_record(data / "redis"),
        postgres_record(data / "postgres"),
    ]


def _stop_leftovers(data: Path) -> None:
    """Stop what a run that died left running, saying so in one line. Only processes of this
    data folder, recognised by their pid files and /proc, are touched."""
    found = [(r, pid) for r in _records(data) if (pid := r.running()) is not None]
    if found:
        names = ", ".join(f"{r.name} (pid {pid})" for r, pid in found)
        _say(
            f"An earlier run in {data} did not stop cleanly; stopping what it left running: {names}"
        )
    for record, _pid in found:
        record.stop()
    runtime_env_path(str(data)).unlink(missing_ok=True)


# --- start ------------------------------------------------------------------------------------


def _servers(settings: Settings, data: Path, started: list[Embedded]) -> dict[str, str]:
    """Embedded servers for what is not configured; each joins `started` as soon as it runs."""
    env: dict[str, str] = {}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    else:
        _say(f"DATABASE_URL is not set: starting embedded Postgres in {data / 'postgres'}")
        started.append(start_postgres(data / "postgres", owned=True))
        env["DATABASE_URL"] = started[-1].url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        _say(f"REDIS_URL is not set: starting embedded Redis in {data / 'redis'}")
        started.append(start_redis(data / "redis"))
        env["REDIS_URL"] = started[-1].url
    return env


@dataclass
class Keys:
    """What the banner shows of each environment, when this data folder knows its keys."""

    webhook_urls: dict[str, str | None] = field(default_factory=dict)
    source_write_keys: dict[str, str | None] = field(default_factory=dict)


def _known(keys: dict[str, Any], name: str, digest: str | None) -> str | None:
    """The key this folder holds for `name`, if it is still the environment's current one."""
    key = keys.get(name)
    return key if isinstance(key, str) and hash_key(key) == digest else None


async def _ensure_environments(settings: Settings, data: Path) -> Keys:
    """Create the default environments once, and a source write key for any environment
    without one; return each one's webhook URL and source write key when we know them."""
    webhook_path, source_path = data / "webhook-keys.json", data / "source-write-keys.json"
    webhook_keys, source_keys = _load(webhook_path), _load(source_path)
    engine = make_engine(settings, pool_size=1)
    shown = Keys()
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            existing = {e.name: e for e in await environments.list_all(session)}
            for name in DEFAULT_ENVIRONMENTS:
                if name not in existing:
                    created = await environments.create(session, name)
                    webhook_keys[name] = created.webhook_key
                    source_keys[name] = created.source_write_key
                    existing[name] = created.environment
            for name, env in existing.items():
                if made := await environments.ensure_source_write_key(session, env):
                    source_keys[name] = made
                key = _known(webhook_keys, name, env.webhook_key_hash)
                shown.webhook_urls[name] = settings.webhook_url(key) if key else None
                shown.source_write_keys[name] = _known(source_keys, name, env.source_write_key_hash)
    finally:
        await engine.dispose()
    _save(webhook_path, webhook_keys)
    _save(source_path, source_keys)
    return shown


def _migrate(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "integration", "migrate"], env=env)
    if done.returncode != 0:
        raise _Failed(f"the database migration failed (exit {done.returncode}); see above")


def _spawn(command: str, env: dict[str, str], data: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-m", "integration", command], env=env)
    write_pid(data / f"{command}.pid", child.pid)
    return child


def _wait_until_serving(settings: Settings, api: subprocess.Popen[bytes]) -> None:
    """The banner says "running" only once the API answers: a port taken meanwhile or a bad
    setting ends the run here, with the API's own error above, instead of after the banner."""
    url = f"{settings.local_base_url}/healthz"
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise _Failed(f"the API server exited (code {api.returncode}) before it answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise _Failed(f"the API server did not answer {url} within {READY_SECONDS} s")


def _banner(settings: Settings, token: str, keys: Keys) -> str:
    # The API's own URLs are this machine's (the bind address); webhook URLs are what
    # Segment calls (PUBLIC_BASE_URL, which defaults to the same).
    base = settings.local_base_url
    lines = [
        "",
        "Segment integration is running.",
        f"  API:          {base}   (docs: {base}/docs, health: {base}/readyz)",
        f"  Admin token:  {token}",
        "  Webhook URLs (paste one into Segment > Destinations > Webhooks):",
    ]
    unknown = "(key shown only at creation; rotate it to see a new one)"
    for name, url in keys.webhook_urls.items():
        lines.append(f"    {name:<12} {url or unknown}")
    lines.append(
        "  Intake write keys (ours, not your Segment write key: Segment libraries and tools"
        f" publish to our /v1 intake with one, host {settings.public_base_url}):"
    )
    for name, key in keys.source_write_keys.items():
        lines.append(f"    {name:<12} {key or unknown}")
    lines += [
        "  Stream product events to Segment with your Segment write key (the CLI works from"
        " any folder while this runs):",
        "    .venv/bin/segment-integration env set production --write-key - --stream on",
        f"  Try it:  curl -H 'Authorization: Bearer {token}' {base}/api/environments",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


# --- run, supervise, stop ---------------------------------------------------------------------


def _supervise(
    children: dict[str, subprocess.Popen[bytes]], env: dict[str, str], data: Path
) -> int:
    """Wait; restart the worker if it dies, stop everything (exit 1) if the API does."""
    while True:
        time.sleep(0.5)
        if children["serve"].poll() is not None:
            code = children["serve"].returncode
            _say(f"the API server exited (code {code}); stopping", error=True)
            return 1
        if children["worker"].poll() is not None:
            _say("the worker exited; restarting it", error=True)
            children["worker"] = _spawn("worker", env, data)


def _stop(
    children: dict[str, subprocess.Popen[bytes]], started: list[Embedded], data: Path
) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for server in reversed(started):
        server.stop()
    # Whatever a signal caught half-started (a server up, not yet in `started`).
    for record in _records(data):
        record.stop()
    for command in ("serve", "worker"):
        (data / f"{command}.pid").unlink(missing_ok=True)


def _note_further_signals() -> None:
    """From now on a signal is only noted: a second Ctrl-C must not cut the cleanup short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: _say("still stopping…", error=True))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _note_further_signals()
    raise _Stop(signal.Signals(signum).name)


def _check_port(settings: Settings) -> None:
    if not _port_free(settings.host, settings.port):
        raise _Failed(
            f"port {settings.port} on {settings.host} is already in use by another program"
            " (another make run, from another folder?). Stop it, or choose a free port:"
            f" PORT={settings.port + 1} make run"
        )


def _run(settings: Settings, data: Path) -> int:
    """Start everything, supervise until a signal or the API's exit, stop everything."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    started: list[Embedded] = []
    registered: Path | None = None
    try:
        _stop_leftovers(data)
        _check_port(settings)
        env_vars = _servers(settings, data, started)
        env_vars |= _local_secrets(settings, data)
        # The children (and CLI commands reading runtime.env) print the same webhook URLs.
        env_vars["PUBLIC_BASE_URL"] = settings.public_base_url
        child_env = {**os.environ, **env_vars}
        _migrate(child_env)
        ready = process_settings(
            database_url=env_vars["DATABASE_URL"], public_base_url=settings.public_base_url
        )
        keys = asyncio.run(_ensure_environments(ready, data))
        children["serve"] = _spawn("serve", child_env, data)
        children["worker"] = _spawn("worker", child_env, data)
        _wait_until_serving(settings, children["serve"])
        _write_runtime_env(data, env_vars)
        # CLI commands in other folders find this run (and its runtime.env) through here.
        try:
            registered = register(runs_registry(), data, settings.local_base_url)
        except OSError as exc:  # a read-only home: the CLI still finds it by folder
            _say(
                f"note: could not record this run in {runs_registry()} ({exc.strerror}); in"
                f" other folders give CLI commands --data-dir {data.resolve()}",
                error=True,
            )
        _say(_banner(settings, env_vars["ADMIN_TOKEN"], keys))
        return _supervise(children, child_env, data)
    except _Stop:
        _say("", "stopping…", error=True)
        return 0
    except _Failed as exc:
        _say(f"make run: {exc}", error=True)
        return 1
    finally:
        _note_further_signals()
        if registered is not None:
            registered.unlink(missing_ok=True)
        _stop(children, started, data)
        runtime_env_path(str(data)).unlink(missing_ok=True)


def _port_free(host: str, port: int) -> bool:
    """Whether the API could listen on host:port now (as uvicorn does, with SO_REUSEADDR, so a
    port that a stopped server left in TIME_WAIT counts as free)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return True  # let uvicorn name the problem
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _already_running(settings: Settings, data: Path, holder: list[str]) -> str:
    pid = holder[0] if holder else "?"
    where = f": it serves {holder[1]}" if len(holder) > 1 else ""
    return (
        f"make run is already running from this data folder ({data}, pid {pid}){where}.\n"
        "Use that one, or stop it first (Ctrl-C in its terminal). A second instance needs its"
        f" own data folder and port: DATA_DIR={data}-2 PORT={settings.port + 1} make run"
    )


def run_all() -> None:
    try:
        settings = process_settings()
    except ConfigError as exc:
        raise SystemExit(f"make run: {exc}") from None
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    try:
        lock = hold_lock(data, settings.local_base_url)
    except AlreadyRunning as exc:
        raise SystemExit(_already_running(settings, data, exc.holder)) from None
    with lock:
        previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
        try:
            code = _run(settings, data)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    raise SystemExit(code)
