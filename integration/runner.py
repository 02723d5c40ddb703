"""`make run`: everything a new user needs, in one command.

Embedded Postgres and Redis under the data folder unless DATABASE_URL / REDIS_URL are set,
migrations, `staging` and `production` on first start, then the API and the worker as child
processes. Secrets generated on first start are kept in the data folder (mode 0600) so that
a second start reuses them, webhook keys included. Ctrl-C stops all of it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from integration.config import RUNTIME_ENV_FILE, Settings, get_settings
from integration.crypto import hash_key
from integration.embedded import Embedded, start_postgres, start_redis

DEFAULT_ENVIRONMENTS = ("staging", "production")


def _load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    tmp.chmod(0o600)
    tmp.replace(path)


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


def _servers(settings: Settings, data: Path) -> tuple[dict[str, str], list[Embedded]]:
    started: list[Embedded] = []
    env: dict[str, str] = {}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    else:
        print(f"DATABASE_URL is not set: starting embedded Postgres in {data / 'postgres'}")
        started.append(start_postgres(data / "postgres"))
        env["DATABASE_URL"] = started[-1].url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        print(f"REDIS_URL is not set: starting embedded Redis in {data / 'redis'}")
        started.append(start_redis(data / "redis"))
        env["REDIS_URL"] = started[-1].url
    return env, started


async def _ensure_environments(settings: Settings, keys_path: Path) -> dict[str, str | None]:
    """Create the default environments once; return each one's webhook URL when we know its key."""
    from integration.environments import service
    from integration.store.db import make_engine, make_sessionmaker, transaction

    keys = _load(keys_path)
    engine = make_engine(settings, pool_size=1)
    urls: dict[str, str | None] = {}
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            existing = {e.name: e for e in await service.list_all(session)}
            for name in DEFAULT_ENVIRONMENTS:
                if name not in existing:
                    created = await service.create(session, name)
                    keys[name] = created.webhook_key
                    existing[name] = created.environment
            for name, env in existing.items():
                key = keys.get(name)
                valid = key is not None and hash_key(key) == env.webhook_key_hash
                urls[name] = settings.webhook_url(key) if valid and key else None
    finally:
        await engine.dispose()
    _save(keys_path, keys)
    return urls


def _banner(settings: Settings, token: str, urls: dict[str, str | None]) -> str:
    base = settings.public_base_url
    lines = [
        "",
        "Segment integration is running.",
        f"  API:          {base}   (docs: {base}/docs, health: {base}/readyz)",
        f"  Admin token:  {token}",
        "  Webhook URLs (paste one into Segment > Destinations > Webhooks):",
    ]
    for name, url in urls.items():
        lines.append(
            f"    {name:<12} {url or '(key shown only at creation; rotate it to see a new one)'}"
        )
    lines += [
        "  Stream product events to Segment:",
        "    .venv/bin/python -m integration env set production"
        " --write-key <HTTP API source write key> --stream on",
        f"  Try it:  curl -H 'Authorization: Bearer {token}' {base}/api/environments",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def _write_runtime_env(env_vars: dict[str, str]) -> None:
    path = Path(RUNTIME_ENV_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in env_vars.items()))
    path.chmod(0o600)


def _spawn(command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "integration", command], env=env)


def _supervise(children: dict[str, subprocess.Popen[bytes]], env: dict[str, str]) -> None:
    """Wait; restart the worker if it dies, stop everything if the API does."""
    while True:
        time.sleep(0.5)
        if children["serve"].poll() is not None:
            print("the API server exited; stopping", file=sys.stderr)
            return
        if children["worker"].poll() is not None:
            print("the worker exited; restarting it", file=sys.stderr)
            children["worker"] = _spawn("worker", env)


def _stop(children: dict[str, subprocess.Popen[bytes]], started: list[Embedded]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
    for server in reversed(started):
        server.stop()


def run_all() -> None:
    settings = get_settings()
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    env_vars, started = _servers(settings, data)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        env_vars |= _local_secrets(settings, data)
        child_env = {**os.environ, **env_vars}
        subprocess.run([sys.executable, "-m", "integration", "migrate"], env=child_env, check=True)
        ready = Settings(
            database_url=env_vars["DATABASE_URL"],
            redis_url=env_vars["REDIS_URL"],
            admin_token=env_vars["ADMIN_TOKEN"],
            secret_key=env_vars["SECRET_KEY"],
        )
        urls = asyncio.run(_ensure_environments(ready, data / "webhook-keys.json"))
        _write_runtime_env(env_vars)
        children["serve"] = _spawn("serve", child_env)
        children["worker"] = _spawn("worker", child_env)
        print(_banner(settings, env_vars["ADMIN_TOKEN"], urls), flush=True)
        _supervise(children, child_env)
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
    finally:
        _stop(children, started)
        Path(RUNTIME_ENV_FILE).unlink(missing_ok=True)
