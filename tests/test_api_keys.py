"""Scoped API keys (issue #11.8): per environment, `publish` or `read`, stored as a SHA-256
digest and shown once; the admin token stays the superuser. A key calls only the routes of
its own environment that name one of its scopes; revoked, it stops at once; failed keys are
throttled like a wrong admin token."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from sqlalchemy import select

from integration.store.db import SessionMaker
from integration.store.models import ApiKey
from tests import processes
from tests.admin_support import error, ok, send
from tests.conftest import ADMIN_TOKEN
from tests.outbound_support import cli
from tests.segment_payloads import MakeEnv, group, identify, new_id, track


async def new_key(admin: httpx.AsyncClient, env_id: Any, *scopes: str) -> dict[str, Any]:
    body = {"name": new_id("key").lower(), "scopes": list(scopes)}
    created: dict[str, Any] = ok(
        await admin.post(f"/api/environments/{env_id}/api-keys", json=body), 201
    )
    return created


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


READS = ("users", "companies", "events", "stats", "deliveries")


async def test_a_key_is_shown_once_and_stored_as_its_digest(
    admin: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    created = await new_key(admin, env.id, "publish", "read")
    key = created["key"]
    assert key.startswith("sik_") and len(key) >= 40
    assert created["scopes"] == ["publish", "read"] and created["key_hint"] == "…" + key[-4:]

    listed = ok(await admin.get(f"/api/environments/{env.id}/api-keys"))
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert key not in str(listed) and "key" not in listed["items"][0]

    async with sessions() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
    assert row is not None
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr([getattr(row, c.key) for c in ApiKey.__table__.columns])

    taken = await admin.post(
        f"/api/environments/{env.id}/api-keys", json={"name": created["name"], "scopes": ["read"]}
    )
    assert error(taken, 409)["error"] == "name_taken"
    for bad in (
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": ["admin"]},
        {"scopes": ["read"]},
    ):
        error(await admin.post(f"/api/environments/{env.id}/api-keys", json=bad), 400)


async def test_a_publish_key_publishes_in_its_environment_and_nothing_else(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env, other = await make_environment(), await make_environment()
    user_id = new_id("user")
    await send(http, env.webhook_path, identify(user_id, {"plan": "pro"}))
    auth = bearer(await new_key(admin, env.id, "publish"))
    base, elsewhere = f"/api/environments/{env.id}", f"/api/environments/{other.id}"

    published = await http.post(
        f"{base}/product-events", json=track(user_id, "Flow Started"), headers=auth
    )
    assert published.status_code == 202, published.text

    # No reading users (or anything else) of its own environment.
    for path in (f"{base}/users", f"{base}/users/{user_id}", *(f"{base}/{r}" for r in READS)):
        assert error(await http.get(path, headers=auth), 403)["error"] == "forbidden", path
    # Nothing of another environment, not even publishing.
    refused = await http.post(f"{elsewhere}/product-events", json=track(user_id, "X"), headers=auth)
    assert "another environment" in error(refused, 403)["detail"]
    error(await http.get(f"{elsewhere}/users", headers=auth), 403)
    # No settings, keys, environments.
    for method, path, body in (
        ("GET", "/api/environments", None),
        ("POST", "/api/environments", {"name": new_id("x").lower()}),
        ("GET", base, None),
        ("PATCH", base, {"company_property": "account_id"}),
        ("POST", f"{base}/rotate-webhook-key", None),
        ("DELETE", f"{base}/users/{user_id}", None),
        ("POST", f"{base}/deliveries/replay", None),
        ("GET", f"{base}/api-keys", None),
        ("POST", f"{base}/api-keys", {"name": "mine", "scopes": ["read"]}),
        ("DELETE", f"{base}/api-keys/whatever", None),
        ("DELETE", f"{base}?force=true", None),
    ):
        response = await http.request(method, path, json=body, headers=auth)
        error(response, 403)
    # Everything is as it was: the user is there, the settings unchanged.
    ok(await admin.get(f"{base}/users/{user_id}"))
    assert ok(await admin.get(base))["company_property"] == "company_id"


async def test_a_read_key_reads_its_own_environment_only(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env, other = await make_environment(), await make_environment()
    user_id = new_id("user")
    await send(
        http, env.webhook_path, identify(user_id, {"plan": "pro"}), group(user_id, "acme", {})
    )
    auth = bearer(await new_key(admin, env.id, "read"))
    base = f"/api/environments/{env.id}"
    for path in (f"{base}/{r}" for r in READS):
        ok(await http.get(path, headers=auth))
    assert ok(await http.get(f"{base}/users/{user_id}", headers=auth))["traits"] == {"plan": "pro"}
    ok(await http.get(f"{base}/companies/acme", headers=auth))
    # Reading is not publishing, and another environment is not its own.
    error(await http.post(f"{base}/product-events", json=track(user_id, "X"), headers=auth), 403)
    for r in READS:
        error(await http.get(f"/api/environments/{other.id}/{r}", headers=auth), 403)


async def test_a_revoked_key_stops_at_once(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    created = await new_key(admin, env.id, "read")
    path = f"/api/environments/{env.id}/stats"
    ok(await http.get(path, headers=bearer(created)))
    revoked = await admin.delete(f"/api/environments/{env.id}/api-keys/{created['id']}")
    assert revoked.status_code == 204
    assert error(await http.get(path, headers=bearer(created)), 401)["error"] == "unauthorized"
    error(await admin.delete(f"/api/environments/{env.id}/api-keys/{created['id']}"), 404)
    # By name, too; and deleting the environment takes its keys with it.
    named = await new_key(admin, env.id, "read")
    ok(await http.get(path, headers=bearer(named)))
    assert (await admin.delete(f"/api/environments/{env.id}?force=true")).status_code == 204
    error(await http.get(path, headers=bearer(named)), 401)


async def test_failed_keys_are_throttled_like_the_admin_token(
    strict: processes.Process, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with httpx.AsyncClient(base_url=strict.url, timeout=10) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        good = await new_key_on(client, admin, env.id)
        path = f"/api/environments/{env.id}/stats"
        for i in range(3):
            wrong = {"Authorization": f"Bearer sik_wrong{i}{'x' * 40}"}
            assert (await client.get(path, headers=wrong)).status_code == 401
        throttled = await client.get(path, headers={"Authorization": "Bearer sik_another"})
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        # A good key still passes: only failures are throttled (issue #20.3).
        assert (await client.get(path, headers=good)).status_code == 200
    log = strict.log()
    assert log.count("admin authentication failed from 127.0.0.1") == 3
    assert "sik_wrong" not in log and good["Authorization"][7:] not in log


async def new_key_on(
    client: httpx.AsyncClient, admin: dict[str, str], env_id: Any
) -> dict[str, str]:
    body = {"name": "throttled", "scopes": ["read"]}
    response = await client.post(f"/api/environments/{env_id}/api-keys", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def test_the_cli_creates_lists_and_revokes_keys(
    env_vars: dict[str, str], http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    created = await cli(env_vars, "api-keys", "create", env.name, "ci", "--scope", "publish")
    assert created.code == 0, created
    key = created.out.strip().splitlines()[-1]
    assert key.startswith("sik_"), created
    published = await http.post(
        f"/api/environments/{env.id}/product-events",
        json=track("u1", "Flow Started"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert published.status_code == 202, published.text

    listed = await cli(env_vars, "api-keys", "list", env.name, "--json")
    assert listed.code == 0, listed
    assert key not in listed.out and key[-4:] in listed.out and '"publish"' in listed.out

    refused = await cli(env_vars, "api-keys", "create", env.name, "bad", "--scope", "admin")
    assert refused.code != 0 and "scopes" in refused.out and "Traceback" not in refused.out

    revoked = await cli(env_vars, "api-keys", "revoke", env.name, "ci")
    assert revoked.code == 0 and "revoked" in revoked.out, revoked
    again = await http.post(
        f"/api/environments/{env.id}/product-events",
        json=track("u1", "Flow Started"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert again.status_code == 401
