"""/api/environments over HTTP against the real server: create, read, change each setting,
secrets at rest and in answers, delete, webhook key rotation, and the connection test."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from integration.config import Settings
from integration.crypto import SecretBox
from integration.store.db import SessionMaker
from tests import processes
from tests.admin_support import (
    UNREACHABLE_API,
    create_environment,
    environment_row,
    error,
    ok,
    path_of,
    row_counts,
    send,
    unique_name,
)
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.segment_payloads import group, identify, new_id, track
from tests.sink import SegmentSink

US = "https://api.segment.io"
EU = "https://events.eu1.segmentapis.com"
PUBLIC_BASE_URL = "http://testserver.invalid"  # conftest's env_vars
SETTING_KEYS = {
    "id",
    "name",
    "webhook_key_hint",
    "source_write_key_hint",
    "previous_webhook_keys",
    "previous_source_write_keys",
    "stream_enabled",
    "store_outbound_events",
    "cors_allowed_origins",
    "company_property",
    "segment_api_url",
    "retention_days",
    "blocked_ids",
    "blocked_ids_default",
    "max_anonymous_ids_per_user",
    "allow_identified_merges",
    "segment_write_key",
    "webhook_signing_secret",
    "created_at",
    "updated_at",
}


def secret(prefix: str) -> str:
    """A realistic secret, unique per test so that finding it anywhere means it leaked."""
    return f"{prefix}_{uuid.uuid4().hex}"


def masked(value: str) -> str:
    return "…" + value[-4:]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Recorder:
    """Keeps every response body a client received, to search them for leaked secrets."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.bodies.append(response.text)

    def assert_never_contains(self, value: str) -> None:
        assert self.bodies, "nothing was recorded"
        leaks = [body for body in self.bodies if value in body]
        assert not leaks, f"{value!r} appeared in a response: {leaks[0][:300]}"


@pytest.fixture
async def recorded(server: processes.Process) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    recorder = Recorder()
    async with httpx.AsyncClient(
        base_url=server.url,
        timeout=30,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        event_hooks={"response": [recorder]},
    ) as client:
        yield client, recorder


# create


async def test_create_returns_the_full_key_once_and_its_webhook_url_accepts_messages(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    name = unique_name()
    created = ok(await admin.post("/api/environments", json={"name": name}), 201)

    key = created["webhook_key"]
    assert isinstance(key, str) and len(key) >= 32
    assert created["webhook_url"] == f"{PUBLIC_BASE_URL}/webhooks/segment/{key}"
    assert created["name"] == name
    assert created["webhook_key_hint"] == masked(key)
    assert created["previous_key_valid_until"] is None
    assert (created["stream_enabled"], created["company_property"]) == (False, "company_id")
    assert created["segment_api_url"] == US
    assert created["segment_write_key"] is None and created["webhook_signing_secret"] is None
    uuid.UUID(created["id"])

    user_id = new_id("user")
    answer = await send(http, path_of(created["webhook_url"]), identify(user_id, {"plan": "pro"}))
    assert answer["stored"] == 1
    users = ok(await admin.get(f"/api/environments/{created['id']}/users"))["items"]
    assert [u["user_id"] for u in users] == [user_id]

    # Only creation (and rotation) show the key: reading the environment never does.
    read = await admin.get(f"/api/environments/{created['id']}")
    assert set(ok(read)) == SETTING_KEYS
    assert key not in read.text


async def test_create_with_settings_applies_them(
    admin: httpx.AsyncClient, sessions: SessionMaker, settings: Settings
) -> None:
    write_key = secret("wk")
    created = await create_environment(
        admin, segment_write_key=write_key, company_property="account_id", segment_api_url="eu"
    )
    assert created["segment_write_key"] == masked(write_key)
    assert created["company_property"] == "account_id"
    assert created["segment_api_url"] == EU
    row = await environment_row(sessions, created["id"])
    assert row is not None and row.segment_write_key is not None
    assert SecretBox(settings.secret_key or "").decrypt(row.segment_write_key) == write_key


async def test_duplicate_name_is_a_conflict(admin: httpx.AsyncClient) -> None:
    created = await create_environment(admin)
    again = await admin.post("/api/environments", json={"name": created["name"]})
    assert error(again, 409)["error"] == "name_taken"
    names = [e["name"] for e in ok(await admin.get("/api/environments"))["items"]]
    assert names.count(created["name"]) == 1


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Staging",
        "-leading-dash",
        "_leading",
        "with space",
        "naïve",
        "a/b",
        "x" * 65,
        "a\x00b",
        "staging\n",
        " staging",
    ],
)
async def test_invalid_name_is_refused_naming_the_field(
    admin: httpx.AsyncClient, name: str
) -> None:
    error(await admin.post("/api/environments", json={"name": name}), 400, field="name")


@pytest.mark.parametrize("body", [{}, {"name": None}, {"name": 42}, {"name": ["staging"]}])
async def test_missing_or_non_string_name_is_refused(
    admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    error(await admin.post("/api/environments", json=body), 400, field="name")


async def test_longest_allowed_name_is_accepted(admin: httpx.AsyncClient) -> None:
    name = f"n-{uuid.uuid4().hex}".ljust(64, "x")
    assert len(name) == 64
    created = ok(await admin.post("/api/environments", json={"name": name}), 201)
    assert created["name"] == name


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "invalid_json"), (b"{not json", "invalid_json"), (b'["staging"]', "invalid_body")],
)
async def test_create_body_must_be_a_json_object(
    admin: httpx.AsyncClient, content: bytes, code: str
) -> None:
    response = await admin.post(
        "/api/environments", content=content, headers={"content-type": "application/json"}
    )
    assert error(response, 400)["error"] == code


async def test_create_with_an_invalid_setting_creates_nothing(
    admin: httpx.AsyncClient,
) -> None:
    name = unique_name()
    for body, field in [
        ({"name": name, "colour": "blue"}, "colour"),
        ({"name": name, "company_property": "has space"}, "company_property"),
        ({"name": name, "stream_enabled": True}, "stream_enabled"),  # no write key
    ]:
        error(await admin.post("/api/environments", json=body), 400, field=field)
    listed = ok(await admin.get("/api/environments"))["items"]
    assert name not in [e["name"] for e in listed]
    ok(await admin.post("/api/environments", json={"name": name}), 201)


# read


async def test_list_and_read_show_settings_without_keys(admin: httpx.AsyncClient) -> None:
    write_key = secret("wk")
    first = await create_environment(admin)
    second = await create_environment(admin, segment_write_key=write_key)

    listed = await admin.get("/api/environments")
    page = ok(listed)
    assert page["next_cursor"] is None
    by_id = {e["id"]: e for e in page["items"]}
    assert {first["id"], second["id"]} <= set(by_id)
    for item in page["items"]:
        assert set(item) == SETTING_KEYS
    assert by_id[second["id"]]["segment_write_key"] == masked(write_key)
    for created in (first, second):
        assert created["webhook_key"] not in listed.text
        one = ok(await admin.get(f"/api/environments/{created['id']}"))
        assert one == by_id[created["id"]]
        assert one == {k: v for k, v in created.items() if k in SETTING_KEYS}
    assert write_key not in listed.text


# A well-formed id no environment has; fixed, so every xdist worker collects the same tests.
@pytest.mark.parametrize(
    "env_id", ["5a72adc8-9bce-4ea6-9d23-11f8190f7e09", "not-a-uuid", "1", "%20"]
)
async def test_unknown_environment_is_404(admin: httpx.AsyncClient, env_id: str) -> None:
    assert error(await admin.get(f"/api/environments/{env_id}"), 404)["error"] == "not_found"
    error(await admin.patch(f"/api/environments/{env_id}", json={"company_property": "x"}), 404)
    error(await admin.delete(f"/api/environments/{env_id}"), 404)
    error(await admin.post(f"/api/environments/{env_id}/rotate-webhook-key"), 404)
    error(await admin.post(f"/api/environments/{env_id}/test-connection"), 404)


# settings


async def test_write_key_is_masked_everywhere_and_encrypted_at_rest(
    recorded: tuple[httpx.AsyncClient, Recorder], sessions: SessionMaker, settings: Settings
) -> None:
    client, recorder = recorded
    write_key = secret("wk")
    body = {"name": unique_name(), "segment_api_url": UNREACHABLE_API}
    created = ok(await client.post("/api/environments", json=body), 201)
    env_path = f"/api/environments/{created['id']}"

    changed = ok(await client.patch(env_path, json={"segment_write_key": write_key}))
    assert changed["segment_write_key"] == masked(write_key)
    assert ok(await client.get(env_path))["segment_write_key"] == masked(write_key)
    listed = ok(await client.get("/api/environments"))["items"]
    assert [e["segment_write_key"] for e in listed if e["id"] == created["id"]] == [
        masked(write_key)
    ]
    ok(await client.post(f"{env_path}/rotate-webhook-key"))
    ok(await client.post(f"{env_path}/test-connection"))
    recorder.assert_never_contains(write_key)

    row = await environment_row(sessions, created["id"])
    assert row is not None and row.segment_write_key is not None
    assert write_key not in row.segment_write_key
    assert write_key[-8:] not in row.segment_write_key
    assert SecretBox(settings.secret_key or "").decrypt(row.segment_write_key) == write_key

    cleared = ok(await client.patch(env_path, json={"segment_write_key": ""}))
    assert cleared["segment_write_key"] is None
    row = await environment_row(sessions, created["id"])
    assert row is not None and row.segment_write_key is None


async def test_signing_secret_is_masked_encrypted_and_enforced(
    recorded: tuple[httpx.AsyncClient, Recorder],
    http: httpx.AsyncClient,
    sessions: SessionMaker,
    settings: Settings,
) -> None:
    client, recorder = recorded
    signing = secret("whsec")
    created = ok(await client.post("/api/environments", json={"name": unique_name()}), 201)
    env_path = f"/api/environments/{created['id']}"
    webhook = path_of(created["webhook_url"])

    changed = ok(await client.patch(env_path, json={"webhook_signing_secret": signing}))
    assert changed["webhook_signing_secret"] == masked(signing)
    assert ok(await client.get(env_path))["webhook_signing_secret"] == masked(signing)
    ok(await client.get("/api/environments"))
    recorder.assert_never_contains(signing)

    row = await environment_row(sessions, created["id"])
    assert row is not None and row.webhook_signing_secret is not None
    assert signing not in row.webhook_signing_secret
    assert SecretBox(settings.secret_key or "").decrypt(row.webhook_signing_secret) == signing

    body = orjson.dumps(identify(new_id("user"), {"plan": "pro"}))
    unsigned = await http.post(webhook, content=body)
    assert error(unsigned, 401)["error"] == "invalid_signature"
    signature = hmac.new(signing.encode(), body, hashlib.sha1).hexdigest()
    signed = await http.post(webhook, content=body, headers={"X-Signature": signature})
    assert ok(signed)["stored"] == 1

    cleared = ok(await client.patch(env_path, json={"webhook_signing_secret": None}))
    assert cleared["webhook_signing_secret"] is None
    body = orjson.dumps(identify(new_id("user"), {}))
    assert ok(await http.post(webhook, content=body))["stored"] == 1


async def test_secrets_never_appear_in_any_answer(
    recorded: tuple[httpx.AsyncClient, Recorder], sink: SegmentSink
) -> None:
    """Every route that shows an environment, after both secrets are set: only hints."""
    client, recorder = recorded
    write_key, signing = secret("wk"), secret("whsec")
    sink.write_keys.add(write_key)
    created = ok(
        await client.post(
            "/api/environments",
            json={
                "name": unique_name(),
                "segment_write_key": write_key,
                "webhook_signing_secret": signing,
                "segment_api_url": sink.url,
            },
        ),
        201,
    )
    env_path = f"/api/environments/{created['id']}"
    ok(await client.get(env_path))
    ok(await client.get("/api/environments"))
    ok(await client.patch(env_path, json={"company_property": "account_id"}))
    ok(await client.patch(env_path, json={"stream_enabled": True}))
    ok(await client.post(f"{env_path}/product-events", json=track("u1", "Flow Started")), 202)
    ok(await client.get(f"{env_path}/deliveries"))
    ok(await client.post(f"{env_path}/rotate-webhook-key"))
    assert ok(await client.post(f"{env_path}/test-connection"))["ok"] is True
    ok(await client.get(f"{env_path}/stats"))
    ok(await client.patch(env_path, json={"stream_enabled": False}))
    ok(await client.get("/openapi.json"))
    for value in (write_key, signing):
        recorder.assert_never_contains(value)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("eu", EU),
        ("EU", EU),
        ("us", US),
        ("http://127.0.0.1:9999/", "http://127.0.0.1:9999"),
        ("HTTPS://API.Segment.IO/", US),
        ("http://127.0.0.1", "http://127.0.0.1"),  # conftest's SEGMENT_API_ALLOWLIST
    ],
)
async def test_segment_api_url(admin: httpx.AsyncClient, given: str, stored: str) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    assert ok(await admin.patch(env_path, json={"segment_api_url": given}))["segment_api_url"] == (
        stored
    )
    assert ok(await admin.get(env_path))["segment_api_url"] == stored


async def test_company_property_decides_which_property_names_the_company(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    changed = ok(await admin.patch(env_path, json={"company_property": "account_id"}))
    assert changed["company_property"] == "account_id"
    assert ok(await admin.get(env_path))["company_property"] == "account_id"

    user_id = new_id("user")
    message = track(user_id, "Report Viewed", {"account_id": "acme", "company_id": "not-this"})
    await send(http, path_of(created["webhook_url"]), message)
    events = ok(await admin.get(f"{env_path}/events"))["items"]
    assert [e["group_id"] for e in events] == ["acme"]
    detail = ok(await admin.get(f"{env_path}/users/{user_id}"))
    assert [c["group_id"] for c in detail["companies"]] == ["acme"]


async def test_stream_needs_a_write_key_and_switches_on_and_off(
    admin: httpx.AsyncClient, sessions: SessionMaker
) -> None:
    created = await create_environment(admin, segment_api_url=UNREACHABLE_API)
    env_path = f"/api/environments/{created['id']}"
    try:
        refused = await admin.patch(env_path, json={"stream_enabled": True})
        assert "segment_write_key" in error(refused, 400, field="stream_enabled")["detail"]
        assert ok(await admin.get(env_path))["stream_enabled"] is False

        write_key = secret("wk")
        both = {"segment_write_key": write_key, "stream_enabled": True}
        on = ok(await admin.patch(env_path, json=both))
        assert (on["stream_enabled"], on["segment_write_key"]) == (True, masked(write_key))
        published = ok(
            await admin.post(f"{env_path}/product-events", json=track("u1", "Flow Started")), 202
        )
        assert (published["stream_enabled"], published["queued"]) == (True, 1)

        # Clearing the key while streaming is refused, and changes nothing.
        refused = await admin.patch(env_path, json={"segment_write_key": ""})
        error(refused, 400, field="stream_enabled")
        assert ok(await admin.get(env_path))["segment_write_key"] == masked(write_key)

        off = ok(await admin.patch(env_path, json={"stream_enabled": False}))
        assert off["stream_enabled"] is False
        published = ok(
            await admin.post(f"{env_path}/product-events", json=track("u1", "Flow Ended")), 202
        )
        assert (published["stream_enabled"], published["queued"]) == (False, 0)
    finally:
        await admin.patch(env_path, json={"stream_enabled": False})


INVALID_SETTINGS: list[tuple[str, Any]] = [
    ("segment_write_key", "short"),
    ("segment_write_key", " padded-write-key "),
    ("segment_write_key", "k" * 513),
    ("segment_write_key", 123456789),
    ("segment_write_key", ["a-long-write-key"]),
    ("webhook_signing_secret", "short"),
    ("webhook_signing_secret", "s" * 513),
    ("webhook_signing_secret", {"secret": "a-long-secret"}),
    ("stream_enabled", "yes"),
    ("stream_enabled", 1),
    ("stream_enabled", None),
    ("company_property", ""),
    ("company_property", "has space"),
    ("company_property", "p" * 256),
    ("company_property", "nul\x00byte"),
    ("company_property", "account_id\n"),
    ("company_property", 42),
    ("company_property", True),
    ("company_property", None),
    ("segment_api_url", ""),
    ("segment_api_url", "ftp://example.com"),
    ("segment_api_url", "not a url"),
    ("segment_api_url", "http://"),
    ("segment_api_url", "http://[::1"),
    ("segment_api_url", "https://api.segment.io\n"),
    ("segment_api_url", "asia"),
    ("segment_api_url", 443),
    ("segment_api_url", None),
    ("colour", "blue"),
    ("name", "renamed"),
]


@pytest.mark.parametrize(("field", "value"), INVALID_SETTINGS)
async def test_invalid_setting_is_refused_naming_the_field_and_changes_nothing(
    admin: httpx.AsyncClient, field: str, value: Any
) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    before = ok(await admin.get(env_path))
    body = error(await admin.patch(env_path, json={field: value}), 400, field=field)
    assert body["error"] == "invalid_field"
    assert ok(await admin.get(env_path)) == before


async def test_one_bad_setting_in_a_patch_applies_none_of_them(admin: httpx.AsyncClient) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    before = ok(await admin.get(env_path))
    both = {"company_property": "account_id", "segment_api_url": "gopher://x"}
    error(await admin.patch(env_path, json=both), 400, field="segment_api_url")
    assert ok(await admin.get(env_path)) == before


@pytest.mark.parametrize("content", [b"", b"[]", b"null", b'"x"', b"{oops"])
async def test_patch_body_must_be_a_json_object(admin: httpx.AsyncClient, content: bytes) -> None:
    created = await create_environment(admin)
    response = await admin.patch(
        f"/api/environments/{created['id']}",
        content=content,
        headers={"content-type": "application/json"},
    )
    error(response, 400)


async def test_empty_patch_changes_nothing(admin: httpx.AsyncClient) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    before = ok(await admin.get(env_path))
    assert ok(await admin.patch(env_path, json={})) == before


async def test_patch_moves_updated_at(admin: httpx.AsyncClient) -> None:
    created = await create_environment(admin)
    changed = ok(
        await admin.patch(
            f"/api/environments/{created['id']}", json={"company_property": "account_id"}
        )
    )
    assert changed["created_at"] == created["created_at"]
    assert when(changed["updated_at"]) > when(created["updated_at"])


# delete


async def test_delete_an_empty_environment(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    response = await admin.delete(f"/api/environments/{created['id']}")
    assert response.status_code == 204 and response.content == b""
    error(await admin.get(f"/api/environments/{created['id']}"), 404)
    hook = await http.post(path_of(created["webhook_url"]), json=identify("u1", {}))
    error(hook, 401)


async def test_delete_refuses_while_the_environment_holds_data_unless_forced(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, sessions: SessionMaker
) -> None:
    created = await create_environment(admin)
    other = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    user_id, anonymous_id = new_id("user"), new_id("anon")
    await send(
        http,
        path_of(created["webhook_url"]),
        identify(user_id, {"plan": "pro"}, anonymousId=anonymous_id),
        group(user_id, "acme", {"name": "Acme"}),
        track(user_id, "Report Viewed"),
    )
    await send(http, path_of(other["webhook_url"]), identify(user_id, {"plan": "free"}))
    other_before = await row_counts(sessions, other["id"])
    counts = await row_counts(sessions, created["id"])
    assert counts["users"] == counts["companies"] == counts["memberships"] == 1
    assert counts["events"] == 3

    for query in ("", "?force=false", "?force=no"):
        refused = await admin.delete(env_path + query)
        assert error(refused, 409)["error"] == "environment_not_empty"
        assert "force=true" in refused.json()["detail"]
    assert ok(await admin.get(env_path))["id"] == created["id"]
    assert await row_counts(sessions, created["id"]) == counts

    forced = await admin.delete(env_path, params={"force": "true"})
    assert forced.status_code == 204
    error(await admin.get(env_path), 404)
    assert await environment_row(sessions, created["id"]) is None
    assert set((await row_counts(sessions, created["id"])).values()) == {0}
    error(await http.post(path_of(created["webhook_url"]), json=identify(user_id, {})), 401)
    # The other environment, with the same user id, keeps everything.
    assert await row_counts(sessions, other["id"]) == other_before
    assert ok(await admin.get(f"/api/environments/{other['id']}/users/{user_id}"))["traits"] == {
        "plan": "free"
    }


async def test_delete_refuses_while_outbound_deliveries_exist(
    admin: httpx.AsyncClient, sessions: SessionMaker
) -> None:
    created = await create_environment(
        admin, segment_write_key=secret("wk"), segment_api_url=UNREACHABLE_API
    )
    env_path = f"/api/environments/{created['id']}"
    try:
        ok(await admin.patch(env_path, json={"stream_enabled": True}))
        ok(await admin.post(f"{env_path}/product-events", json=track("u1", "Flow Started")), 202)
        ok(await admin.patch(env_path, json={"stream_enabled": False}))
        assert (await row_counts(sessions, created["id"]))["outbox"] >= 1
        error(await admin.delete(env_path), 409)
    finally:
        forced = await admin.delete(env_path, params={"force": "1"})
    assert forced.status_code == 204
    assert set((await row_counts(sessions, created["id"])).values()) == {0}


# webhook key rotation


async def test_rotation_gives_a_new_key_and_the_old_one_works_during_the_grace_period(
    admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    old_key = created["webhook_key"]

    before = datetime.now(UTC)
    rotated = ok(await admin.post(f"{env_path}/rotate-webhook-key"))
    new_key = rotated["webhook_key"]
    assert new_key != old_key and len(new_key) >= 32
    assert rotated["webhook_url"] == f"{PUBLIC_BASE_URL}/webhooks/segment/{new_key}"
    assert rotated["webhook_key_hint"] == masked(new_key)
    valid_until = when(rotated["previous_key_valid_until"])
    grace = timedelta(days=1)  # WEBHOOK_KEY_GRACE_SECONDS default
    assert before + grace - timedelta(minutes=1) < valid_until < datetime.now(UTC) + grace
    read = await admin.get(env_path)
    assert ok(read)["webhook_key_hint"] == masked(new_key)
    assert new_key not in read.text

    for key in (new_key, old_key):
        answer = await send(http, f"/webhooks/segment/{key}", identify(new_id("user"), {}))
        assert answer["stored"] == 1

    # A second rotation keeps both earlier keys working, each until its own time
    # (tests/test_key_rotation.py goes further).
    newest = ok(await admin.post(f"{env_path}/rotate-webhook-key"))["webhook_key"]
    for key in (newest, new_key, old_key):
        await send(http, f"/webhooks/segment/{key}", identify(new_id("user"), {}))


async def test_a_null_grace_means_the_default_grace(admin: httpx.AsyncClient) -> None:
    """An explicit `"grace_seconds": null` is the default grace for both keys, as documented
    (it was a 500: pydantic applied the bounds to the null)."""
    created = await create_environment(admin)
    env_path = f"/api/environments/{created['id']}"
    day = timedelta(days=1)  # both keys' default grace
    for route, field in (
        ("rotate-webhook-key", "previous_key_valid_until"),
        ("rotate-source-write-key", "previous_source_write_key_valid_until"),
    ):
        before = datetime.now(UTC)
        rotated = ok(await admin.post(f"{env_path}/{route}", json={"grace_seconds": None}))
        valid_until = when(rotated[field])
        assert before + day - timedelta(minutes=1) < valid_until < datetime.now(UTC) + day


@pytest.mark.slow
async def test_old_key_stops_working_when_the_grace_period_ends(
    env_vars: dict[str, str],
) -> None:
    short = processes.serve(env_vars, WEBHOOK_KEY_GRACE_SECONDS="2")
    try:
        async with httpx.AsyncClient(
            base_url=short.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as client:
            created = await create_environment(client)
            old_key = created["webhook_key"]
            rotated = ok(await client.post(f"/api/environments/{created['id']}/rotate-webhook-key"))
            new_key = rotated["webhook_key"]
            valid_until = when(rotated["previous_key_valid_until"])
            assert valid_until - datetime.now(UTC) < timedelta(seconds=3)

            async def status(key: str) -> int:
                response = await client.post(
                    f"/webhooks/segment/{key}", json=identify(new_id("user"), {})
                )
                return response.status_code

            async def old_key_refused() -> bool:
                return await status(old_key) == 401

            assert await status(old_key) == 200  # still inside the grace period
            await wait_for(old_key_refused, timeout=15, interval=0.25)
            assert datetime.now(UTC) >= valid_until
            assert await status(new_key) == 200
    finally:
        short.stop()


# test-connection


async def test_connection_without_a_write_key_says_so(admin: httpx.AsyncClient) -> None:
    created = await create_environment(admin)
    result = ok(await admin.post(f"/api/environments/{created['id']}/test-connection"))
    assert result["ok"] is False
    assert result["status"] is None
    assert "write key" in result["summary"].lower()
    assert result["summary"].startswith("No write key")


async def test_connection_reports_segment_accepting_the_test_event(
    admin: httpx.AsyncClient, sink: SegmentSink
) -> None:
    write_key = secret("wk")
    sink.write_keys.add(write_key)
    created = await create_environment(admin, segment_write_key=write_key, segment_api_url=sink.url)
    response = await admin.post(f"/api/environments/{created['id']}/test-connection")
    result = ok(response)
    assert (result["ok"], result["status"]) == (True, 200)
    assert result["summary"].startswith("OK")
    assert write_key not in response.text
    [received] = sink.received
    assert received.write_key == write_key
    assert received.message["event"] == "Segment Connection Tested"
    assert received.message["properties"]["environment"] == created["name"]


async def test_connection_reports_a_rejected_write_key(
    admin: httpx.AsyncClient, sink: SegmentSink
) -> None:
    created = await create_environment(
        admin, segment_write_key=secret("wk"), segment_api_url=sink.url
    )
    result = ok(await admin.post(f"/api/environments/{created['id']}/test-connection"))
    assert (result["ok"], result["status"]) == (False, 401)
    assert "write key" in result["summary"]
    assert sink.received == []


async def test_connection_reports_an_unreachable_segment(admin: httpx.AsyncClient) -> None:
    created = await create_environment(
        admin, segment_write_key=secret("wk"), segment_api_url=UNREACHABLE_API
    )
    result = ok(await admin.post(f"/api/environments/{created['id']}/test-connection"))
    assert (result["ok"], result["status"]) == (False, None)
    assert result["summary"].startswith("Could not reach Segment")
