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

from integration import keyring
from integration.config import (
    ConfigError,
    Settings,
    process_settings,
    runs_registry,
    runtime_env_path,
)
from integration.crypto import SecretBox
from integration.embedded import (
    Embedded,
    postgres_record,
    redis_record,
    start_postgres,
    start_redis,
)
from integration.environments import service as environments
from integration.outbound import events
from integration.rundir import (
    AlreadyRunning,
    Recorded,
    command_line,
    controlling_terminal,
    hold_lock,
    register,
    write_pid,
    write_private,
)
from integration.store.db import make_engine, make_sessionmaker, transaction

DEFAULT_ENVIRONMENTS = ("staging", "production")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ROTATE_SIGNAL = signal.SIGUSR1  # `secret-key rotate`: a new SECRET_KEY waits in secrets.json
SECRETS_FILE = "secrets.json"
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


@dataclass(frozen=True)
class Token:
    """The admin token, and how the banner shows it: whole only the first time."""

    value: str
    new: bool  # made by this start
    where: str  # where it is kept, for the banner

    @property
    def shown(self) -> str:
        if self.new:
            return f"{self.value}   (shown whole this once; kept in {self.where})"
        return f"…{self.value[-4:]}   (in {self.where})"


def _admin_token(settings: Settings, data: Path, env_vars: dict[str, str], new: bool) -> Token:
    if settings.admin_token:
        return Token(settings.admin_token, False, "ADMIN_TOKEN")
    return Token(env_vars["ADMIN_TOKEN"], new, str(data / SECRETS_FILE))


def _local_secrets(settings: Settings, data: Path) -> dict[str, str]:
    path = data / SECRETS_FILE
    stored = _load(path)
    stored.setdefault("admin_token", secrets.token_urlsafe(24))
    stored.setdefault("secret_key", secrets.token_urlsafe(32))
    _save(path, stored)
    found = {
        "ADMIN_TOKEN": settings.admin_token or stored["admin_token"],
        "SECRET_KEY": settings.secret_key or stored["secret_key"],
    }
    # Given during a rotation by hand (SECURITY.md): CLI commands need it too.
    if settings.secret_key_previous:
        found["SECRET_KEY_PREVIOUS"] = settings.secret_key_previous
    return found


# --- SECRET_KEY ---------------------------------------------------------------------------------
#
# Under `make run` the key lives in secrets.json. `segment-integration secret-key rotate` puts a
# new one there with the old one beside it ("secret_key_previous") and sends the run
# ROTATE_SIGNAL; the run then stops its API and worker, re-encrypts every stored secret with the
# new key, forgets the old one and starts them again with the new key. A run that starts and
# finds an old key still beside the new one (it was stopped meanwhile) finishes the same way.


def prepare_rotation(data: Path, current: str) -> str:
    """Put a new SECRET_KEY in `data`'s secrets.json, the current one beside it, for the run
    to finish (ROTATE_SIGNAL, or its next start); the new key. ConfigError when the run's key
    is not secrets.json's (it was given SECRET_KEY: rotate by hand, SECURITY.md)."""
    path = data / SECRETS_FILE
    stored = _load(path)
    if stored.get("secret_key") != current:
        raise ConfigError(
            f"this `make run` takes SECRET_KEY from its environment, not from {path}: rotate it"
            " by hand (SECURITY.md): restart it with the new key as SECRET_KEY and the old one"
            " as SECRET_KEY_PREVIOUS, then run this command again"
        )
    if not stored.get("secret_key_previous"):  # else: one prepared before, not yet finished
        stored["secret_key_previous"] = current
        stored["secret_key"] = secrets.token_urlsafe(32)
        _save(path, stored)
    new: str = stored["secret_key"]
    return new


def rotation_pending(data: Path) -> bool:
    return bool(_load(data / SECRETS_FILE).get("secret_key_previous"))


async def _finish_rotation(database_url: str, data: Path) -> int | None:
    """Re-encrypt with secrets.json's new key if a rotation is pending; the secrets count."""
    path = data / SECRETS_FILE
    stored = _load(path)
    previous = stored.get("secret_key_previous")
    if not previous:
        return None
    config = process_settings(
        database_url=database_url, secret_key=stored["secret_key"], secret_key_previous=previous
    )
    engine = make_engine(config, pool_size=1)
    try:
        done = await keyring.rotate(make_sessionmaker(engine), SecretBox.of(config))
    except keyring.SecretKeyMismatch as exc:
        raise _Failed(f"the SECRET_KEY rotation in {path} cannot be finished: {exc}") from None
    finally:
        await engine.dispose()
    del stored["secret_key_previous"]  # after the commit: a crash before this redoes it
    _save(path, stored)
    return done.secrets


async def _check_secret_key(settings: Settings, env_vars: dict[str, str], data: Path) -> None:
    """Stop the start, naming the file to fix, if the key does not open the database's
    secrets (the API and the worker would refuse it too, in less helpful words)."""
    config = process_settings(
        database_url=env_vars["DATABASE_URL"],
        secret_key=env_vars["SECRET_KEY"],
        secret_key_previous=env_vars.get("SECRET_KEY_PREVIOUS"),
    )
    engine = make_engine(config, pool_size=1)
    try:
        await keyring.verify(make_sessionmaker(engine), SecretBox.of(config))
    except keyring.SecretKeyMismatch:
        path = data / SECRETS_FILE
        where = (
            "SECRET_KEY (set in this environment)"
            if settings.secret_key
            else f'the "secret_key" in {path}'
        )
        raise _Failed(
            f"{where} does not open the secrets stored in this database. Give the key they"
            f' were encrypted with: put it in {path} as "secret_key" (or start with'
            " SECRET_KEY=<that key> make run). To change the key of a `make run`, run"
            " `segment-integration secret-key rotate` while it runs (SECURITY.md)."
        ) from None
    finally:
        await engine.dispose()


def _server_password(data: Path, name: str) -> str:
    """The embedded server's password, made once and kept in the 0600 secrets.json."""
    path = data / "secrets.json"
    stored = _load(path)
    if name not in stored:
        stored[name] = secrets.token_urlsafe(32)
        _save(path, stored)
    return str(stored[name])


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
    # This user's alone (a folder from before may be open): set here, once what an earlier
    # run left running is stopped, since a running Postgres opens its files through it.
    data.chmod(0o700)
    env: dict[str, str] = {}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    else:
        _say(f"DATABASE_URL is not set: starting embedded Postgres in {data / 'postgres'}")
        password = _server_password(data, "postgres_password")
        started.append(start_postgres(data / "postgres", owned=True, password=password))
        env["DATABASE_URL"] = started[-1].url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        _say(f"REDIS_URL is not set: starting embedded Redis in {data / 'redis'}")
        started.append(start_redis(data / "redis", password=secrets.token_urlsafe(32)))
        env["REDIS_URL"] = started[-1].url
    return env


@dataclass
class Keys:
    """What the banner shows of each environment's keys: whole when this start made them (the
    only time they are shown), else their last characters."""

    webhook_urls: dict[str, str] = field(default_factory=dict)
    source_write_keys: dict[str, str] = field(default_factory=dict)


# Where older versions kept every key they made, in plain text, to print them at each start.
OLD_KEY_FILES = ("webhook-keys.json", "source-write-keys.json")
ONLY_AT_CREATION = "(its last characters: a key is shown whole only when it is made)"


async def _ensure_environments(settings: Settings, data: Path) -> Keys:
    """Create the default environments once, and a source write key for any environment
    without one; return what the banner shows of each one's keys."""
    for name in OLD_KEY_FILES:
        (data / name).unlink(missing_ok=True)
    engine = make_engine(settings, pool_size=1)
    shown = Keys()
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            existing = {e.name: e for e in await environments.list_all(session)}
            for name in DEFAULT_ENVIRONMENTS:
                if name not in existing:
                    created = await environments.create(session, name)
                    shown.webhook_urls[name] = settings.webhook_url(created.webhook_key)
                    shown.source_write_keys[name] = created.source_write_key
                    existing[name] = created.environment
            for name, env in existing.items():
                if made := await events.ensure_source_write_key(session, env):
                    shown.source_write_keys[name] = made
                hint = f"…{env.webhook_key_hint} {ONLY_AT_CREATION}"
                shown.webhook_urls.setdefault(name, hint)
                hint = f"…{env.source_write_key_hint} {ONLY_AT_CREATION}"
                shown.source_write_keys.setdefault(name, hint)
    finally:
        await engine.dispose()
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


def _banner(settings: Settings, token: Token, keys: Keys) -> str:
    # The API's own URLs are this machine's (the bind address); webhook URLs are what
    # Segment calls (PUBLIC_BASE_URL, which defaults to the same).
    base = settings.local_base_url
    lines = [
        "",
        "Segment integration is running.",
        f"  API:          {base}   (docs: {base}/docs, health: {base}/readyz)",
        f"  Admin token:  {token.shown}",
        "  Webhook URLs (paste one into Segment > Destinations > Webhooks):",
    ]
    for name, url in keys.webhook_urls.items():
        lines.append(f"    {name:<12} {url}")
    lines.append(
        "  Intake write keys (ours, not your Segment write key: Segment libraries and tools"
        f" publish to our /v1 intake with one, host {settings.public_base_url}):"
    )
    for name, key in keys.source_write_keys.items():
        lines.append(f"    {name:<12} {key}")
    bearer = token.value if token.new else "<admin token>"
    lines += [
        "  Stream product events to Segment with your Segment write key (the CLI works from"
        " any folder while this runs):",
        "    .venv/bin/segment-integration env set production --write-key - --stream on",
        f"  Try it:  curl -H 'Authorization: Bearer {bearer}' {base}/api/environments",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


# --- run, supervise, stop ---------------------------------------------------------------------


@dataclass
class _Services:
    """The API and the worker of a run, with what they are started with."""

    settings: Settings
    data: Path
    env_vars: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        child_env = {**os.environ, **self.env_vars}
        self.children["serve"] = _spawn("serve", child_env, self.data)
        self.children["worker"] = _spawn("worker", child_env, self.data)
        _wait_until_serving(self.settings, self.children["serve"])
        _write_runtime_env(self.data, self.env_vars)

    def rotate_secret_key(self) -> None:
        """Finish a rotation `secret-key rotate` prepared in secrets.json (see above)."""
        if self.settings.secret_key:
            _say("SECRET_KEY rotation ignored: this run's key comes from SECRET_KEY", error=True)
            return
        _say("SECRET_KEY rotation: restarting the API and the worker with the new key", error=True)
        _stop_children(self.children)
        count = asyncio.run(_finish_rotation(self.env_vars["DATABASE_URL"], self.data))
        self.env_vars["SECRET_KEY"] = _load(self.data / SECRETS_FILE)["secret_key"]
        self.start()
        _say(f"SECRET_KEY rotated: {count or 0} secret(s) re-encrypted with the new key")


@dataclass
class _Asked:
    """What a signal asked for, noted by the handler and acted on by the supervising loop."""

    rotate: bool = False


_ASKED = _Asked()


def _on_rotate(signum: int, frame: FrameType | None) -> None:
    _ASKED.rotate = True


def _supervise(services: _Services, *, parent: int, terminal: int) -> int:
    """Wait; restart the worker if it dies, stop everything (exit 1) if the API does.

    Stop everything (exit 0) when our terminal hangs up or our parent goes, as on SIGHUP. When
    `ssh -t host make run` loses its connection, the kernel sends SIGHUP to `make` alone (the
    session's leader), and `make` then waits for us: only the terminal, detached from us
    too, tells. A parent killed outright leaves us to init."""
    children = services.children
    while True:
        time.sleep(0.5)
        if terminal and controlling_terminal() != terminal:
            _say("the terminal closed; stopping", error=True)
            return 0
        if os.getppid() != parent:
            _say("the process that started this run is gone; stopping", error=True)
            return 0
        if _ASKED.rotate:
            _ASKED.rotate = False
            services.rotate_secret_key()
        if children["serve"].poll() is not None:
            code = children["serve"].returncode
            _say(f"the API server exited (code {code}); stopping", error=True)
            return 1
        if children["worker"].poll() is not None:
            _say("the worker exited; restarting it", error=True)
            children["worker"] = _spawn(
                "worker", {**os.environ, **services.env_vars}, services.data
            )


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _stop(
    children: dict[str, subprocess.Popen[bytes]], started: list[Embedded], data: Path
) -> None:
    _stop_children(children)
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


def _free_port_after(host: str, port: int) -> int | None:
    """The first port after `port` free now on `host`, among the next few, for a hint."""
    return next((p for p in range(port + 1, min(port + 50, 65536)) if _port_free(host, p)), None)


def _port_hint(host: str, port: int) -> str:
    free = _free_port_after(host, port)
    return f"PORT={free}" if free else "PORT=<a free port>"


def _check_port(settings: Settings) -> None:
    if not _port_free(settings.host, settings.port):
        raise _Failed(
            f"port {settings.port} on {settings.host} is already in use by another program"
            " (another make run, from another folder?). Stop it, or choose a free port:"
            f" {_port_hint(settings.host, settings.port)} make run"
        )


def _run(settings: Settings, data: Path) -> int:
    """Start everything, supervise until a signal or the API's exit, stop everything."""
    started: list[Embedded] = []
    registered: Path | None = None
    services: _Services | None = None
    parent, terminal = os.getppid(), controlling_terminal()
    try:
        _stop_leftovers(data)
        _check_port(settings)
        env_vars = _servers(settings, data, started)
        new_token = "admin_token" not in _load(data / SECRETS_FILE)
        env_vars |= _local_secrets(settings, data)
        # The children (and CLI commands reading runtime.env) print the same webhook URLs.
        env_vars["PUBLIC_BASE_URL"] = settings.public_base_url
        # One allowlist: the worker's. CLI commands check hosts against this copy of it.
        env_vars["SEGMENT_API_ALLOWLIST"] = settings.segment_api_allowlist
        services = _Services(settings, data, env_vars)
        _migrate({**os.environ, **env_vars})
        if not settings.secret_key:  # a rotation prepared while the last run stopped
            asyncio.run(_finish_rotation(env_vars["DATABASE_URL"], data))
        asyncio.run(_check_secret_key(settings, env_vars, data))
        ready = process_settings(
            database_url=env_vars["DATABASE_URL"], public_base_url=settings.public_base_url
        )
        keys = asyncio.run(_ensure_environments(ready, data))
        services.start()
        # CLI commands in other folders find this run (and its runtime.env) through here.
        try:
            registered = register(runs_registry(), data, settings.local_base_url)
        except OSError as exc:  # a read-only home: the CLI still finds it by folder
            _say(
                f"note: could not record this run in {runs_registry()} ({exc.strerror}); in"
                f" other folders give CLI commands --data-dir {data.resolve()}",
                error=True,
            )
        _say(_banner(settings, _admin_token(settings, data, env_vars, new_token), keys))
        return _supervise(services, parent=parent, terminal=terminal)
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
        _stop(services.children if services else {}, started, data)
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
        f" own data folder and port: DATA_DIR={data}-2 {_port_hint(settings.host, settings.port)}"
        " make run"
    )


def run_all() -> None:
    try:
        settings = process_settings()
    except ConfigError as exc:
        raise SystemExit(f"make run: {exc}") from None
    data = Path(settings.data_dir)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        lock = hold_lock(data, settings.local_base_url)
    except AlreadyRunning as exc:
        raise SystemExit(_already_running(settings, data, exc.holder)) from None
    with lock:
        previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
        previous[ROTATE_SIGNAL] = signal.signal(ROTATE_SIGNAL, _on_rotate)
        try:
            code = _run(settings, data)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    raise SystemExit(code)
