"""The command line (issue #11.5): the console script, a command for every admin action
(through the services the admin API calls), each run end to end as a user types it, and
finding a running `make run` from any folder, or saying what to fix when there is none."""

from __future__ import annotations

import hmac
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import update

from integration.http.pagination import MAX_LIMIT
from integration.inbound.digests import PURPOSE, InstallKey
from integration.store.db import SessionMaker, transaction
from integration.store.models import OutboxMessage
from tests.admin_support import UNREACHABLE_API, ok, path_of, send
from tests.outbound_support import Delivery, cli, tracks
from tests.segment_payloads import MakeEnv, identify, new_id, track

SCRIPT = Path(sys.executable).parent / "segment-integration"


def run_script(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it (no venv activated, any folder)."""
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def bare_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no settings, an empty registry of runs."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st")}


def test_the_console_script_is_installed_and_runs(tmp_path: Path) -> None:
    assert SCRIPT.exists(), "make install should install the segment-integration script"
    done = run_script("--version", cwd=tmp_path, env=bare_env(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "segment-integration, version 0.1.0"
    helped = run_script("--help", cwd=tmp_path, env=bare_env(tmp_path))
    for group in ("env", "api-keys", "deliveries", "users", "stats", "deletions", "serve"):
        assert f"  {group} " in helped.stdout, helped.stdout


def test_without_settings_or_a_running_instance_it_says_what_to_fix(tmp_path: Path) -> None:
    done = run_script("env", "list", cwd=tmp_path, env=bare_env(tmp_path))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "DATABASE_URL" in out and "make run" in out and "--data-dir" in out, out
    assert "Traceback" not in out

    named = run_script(
        "--data-dir", str(tmp_path / "nothing"), "stats", "x", cwd=tmp_path, env=bare_env(tmp_path)
    )
    out = named.stdout + named.stderr
    assert named.returncode == 1 and "no `make run` is running from" in out, out

    # Settings that name a database nobody serves: said so, in one line.
    down = {**bare_env(tmp_path), "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    unreachable = run_script("stats", "x", cwd=tmp_path, env=down)
    out = unreachable.stdout + unreachable.stderr
    assert unreachable.returncode == 1 and "cannot reach the database" in out, out
    assert "Traceback" not in out
    # It said first which instance it tried: the database, without its password (issue #19.4).
    assert unreachable.stderr.startswith(
        "instance: DATABASE_URL from the environment"
        " (database postgresql://postgres@127.0.0.1:1/x)\n"
    ), unreachable.stderr
    secret = {**down, "DATABASE_URL": "postgresql://app:hunter2-secret@127.0.0.1:1/x"}
    masked = run_script("stats", "x", cwd=tmp_path, env=secret)
    assert "database postgresql://app:***@127.0.0.1:1/x)" in masked.stderr, masked.stderr
    assert "hunter2" not in masked.stdout + masked.stderr

    # A runtime.env left by a run that died is not believed.
    data = tmp_path / ".data"
    data.mkdir()
    (data / "runtime.env").write_text("DATABASE_URL=postgresql://127.0.0.1:1/gone\n")
    stale = run_script("env", "list", cwd=tmp_path, env=bare_env(tmp_path))
    out = stale.stdout + stale.stderr
    assert stale.returncode == 1 and "left by a run that died" in out, out
    assert "Traceback" not in out


def test_the_limit_is_the_admin_apis_largest_page() -> None:
    from integration.cli.common import limit_option

    @limit_option()
    def command(limit: int) -> None: ...

    param = command.__click_params__[0]  # type: ignore[attr-defined]
    assert param.type.max == MAX_LIMIT


async def test_environment_commands_end_to_end(
    env_vars: dict[str, str], http: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    name = new_id("cli").lower()
    created = await cli(env_vars, "env", "create", name, "--json")
    assert created.code == 0, created
    made = orjson.loads(created.out)
    old_path = path_of(made["webhook_url"])
    await send(http, old_path, identify("u1", {"plan": "pro"}))

    listed = await cli(env_vars, "env", "list")
    line = next(row for row in listed.out.splitlines() if row.startswith(name))
    assert "segment_write_key=not set" in line and "signing_secret=not set" in line, line
    assert "None" not in listed.out

    wrong = await cli(env_vars, "env", "rotate-key", name, "--grace-seconds", "-1")
    assert wrong.code == 2 and "--grace-seconds" in wrong.out, wrong
    rotated = await cli(env_vars, "env", "rotate-key", name, "--grace-seconds", "0")
    assert rotated.code == 0 and "revoked" in rotated.out, rotated
    new_url = rotated.out.strip().splitlines()[-1]
    assert new_url.startswith("http://testserver.invalid/webhooks/segment/"), rotated
    assert (await http.post(old_path, json=identify("u1", {}))).status_code == 401
    await send(http, path_of(new_url), identify("u1", {"seats": 3}))

    graced = await cli(env_vars, "env", "rotate-key", name, "--json")
    assert orjson.loads(graced.out)["previous_key_valid_until"], graced
    await send(http, path_of(orjson.loads(graced.out)["webhook_url"]), identify("u1", {}))
    await send(http, path_of(new_url), identify("u1", {}))  # within its grace period

    asked = await cli(env_vars, "env", "delete", name)  # no terminal, no --yes: not confirmed
    assert asked.code == 1 and "Aborted" in asked.out, asked
    refused = await cli(env_vars, "env", "delete", name, "--yes")
    assert refused.code == 1 and "--force" in refused.out and "?force" not in refused.out
    assert await environment_row_by_name(admin, name)
    deleted = await cli(env_vars, "env", "delete", name, "--force", "--yes")
    assert deleted.code == 0 and f"Deleted environment {name}" in deleted.out, deleted
    assert not await environment_row_by_name(admin, name)
    missing = await cli(env_vars, "env", "delete", name, "--yes")
    assert missing.code == 1 and f"no environment named '{name}'" in missing.out


async def environment_row_by_name(admin: httpx.AsyncClient, name: str) -> bool:
    items = ok(await admin.get("/api/environments"))["items"]
    return any(e["name"] == name for e in items)


async def test_user_stats_and_deletion_commands_end_to_end(
    env_vars: dict[str, str], http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    user_id = new_id("user")
    await send(http, env.webhook_path, identify(user_id, {"plan": "pro"}), track(user_id, "Seen"))

    shown = await cli(env_vars, "users", "show", env.name, user_id, "--json")
    assert shown.code == 0, shown
    user = orjson.loads(shown.out)
    assert user["traits"] == {"plan": "pro"} and len(user["recent_events"]) == 2
    text = await cli(env_vars, "users", "show", str(env.id), user_id)  # by id, too
    assert f"user {user_id} of {env.id}" in text.out and '"plan":"pro"' in text.out, text

    stats = await cli(env_vars, "stats", env.name, "--json")
    assert orjson.loads(stats.out)["users"] == 1 and orjson.loads(stats.out)["events_total"] == 2
    readable = await cli(env_vars, "stats", env.name)
    assert "last outbound at     never" in readable.out, readable

    erased = await cli(env_vars, "users", "erase", env.name, user_id, "--yes")
    assert erased.code == 0, erased
    assert f"erased {user_id} from {env.name}:" in erased.out and "users 1" in erased.out
    assert "events 2" in erased.out, erased
    again = await cli(env_vars, "users", "erase", env.name, user_id, "--yes")
    assert again.code == 1 and "no user" in again.out, again
    gone = await cli(env_vars, "users", "show", env.name, user_id)
    assert gone.code == 1 and "Traceback" not in gone.out

    trail = await cli(env_vars, "deletions", "list", env.name, "--json")
    rows = orjson.loads(trail.out)
    key = InstallKey(hmac.new(env_vars["SECRET_KEY"].encode(), PURPOSE, "sha256").digest())
    assert [r["user_id_hash"] for r in rows] == [key.hexdigest(user_id)]
    assert rows[0]["requested_by"] == "admin" and user_id not in trail.out


async def test_delivery_commands_end_to_end(
    env_vars: dict[str, str], delivery: Delivery, sessions: SessionMaker
) -> None:
    env, _ = await delivery.stream(api_url=UNREACHABLE_API)
    ids = await delivery.publish(env, tracks(3))
    async with transaction(sessions) as session:  # as if Segment had refused two of them
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.message_id.in_(ids[:2]))
            .values(status="dead", last_error="400: invalid write key", response_status=400)
        )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.message_id == ids[2])
            .values(status="delivered", last_error=None, response_status=200)
        )
    dead = await cli(env_vars, "deliveries", "list", env.name, "--status", "dead", "--json")
    assert sorted(r["message_id"] for r in orjson.loads(dead.out)) == sorted(ids[:2]), dead
    everything = await cli(env_vars, "deliveries", "list", env.name, "--limit", "2")
    assert len(everything.out.strip().splitlines()) == 2, everything
    assert "segment=400" in everything.out or "pending" in everything.out
    delivered = await cli(env_vars, "deliveries", "list", env.name, "--status", "delivered")
    [line] = delivered.out.strip().splitlines()
    assert ids[2] in line and "segment=200" in line and "error" not in line, line
    failed = await cli(env_vars, "deliveries", "list", env.name, "--status", "dead")
    assert failed.out.count("error=400: invalid write key") == 2, failed

    bad = await cli(env_vars, "deliveries", "list", env.name, "--status", "lost")
    assert bad.code == 2 and "pending, delivered, dead" in bad.out, bad

    one = await cli(env_vars, "deliveries", "replay", env.name, "--message-id", ids[0])
    assert one.code == 0 and "replayed 1 dead delivery" in one.out, one
    rest = await cli(env_vars, "deliveries", "replay", env.name, "--json")
    assert orjson.loads(rest.out)["replayed"] == 1, rest
    left = await cli(env_vars, "deliveries", "list", env.name, "--status", "dead", "--json")
    assert orjson.loads(left.out) == []


async def test_version_and_help_need_no_settings(env_vars: dict[str, str]) -> None:
    version = await cli({"DATABASE_URL": ""}, "--version")
    assert version.code == 0 and "version 0.1.0" in version.out
    for group in ("env", "deliveries", "users", "api-keys", "deletions"):
        helped = await cli(env_vars, group, "--help")
        assert helped.code == 0 and "Usage:" in helped.out, helped


@pytest.mark.slow
def test_the_cli_finds_a_running_make_run_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `make run` in one folder; the console script in another finds it through the
    per-user registry, and by --data-dir; after the run stops, it says so."""
    from integration.embedded import free_port
    from tests.test_run_command import _start, _stop

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    project = tmp_path / "project"
    elsewhere = tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    proc, _banner = _start(project, free_port())
    user = {**bare_env(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    try:
        found = run_script("env", "list", "--json", cwd=elsewhere, env=user)
        assert found.returncode == 0, found.stderr
        names = {e["name"] for e in orjson.loads(found.stdout)}
        assert names == {"staging", "production"}
        by_folder = run_script(
            "--data-dir", str(project / ".data"), "stats", "production", cwd=elsewhere, env=user
        )
        assert by_folder.returncode == 0 and "users" in by_folder.stdout, by_folder.stderr
        stream = run_script("env", "test", "staging", cwd=elsewhere, env=user)
        assert "write key" in (stream.stdout + stream.stderr).lower()
    finally:
        _stop(proc)
    stopped = run_script("env", "list", cwd=elsewhere, env=user)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1 and "No running `make run` was found" in out, out
    assert not list((tmp_path / "state").rglob("*.json")), "the run's entry stays after it stopped"
