"""/api/environments/{id}/mappings/{direction} over HTTP against the real server: change a
mapping (every change a version), refusals that name where a definition is wrong, going back
one version, promotion to another environment, previews, who may call what, and the same
through the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

from integration.store.db import SessionMaker, transaction
from integration.store.models import MappingVersion
from tests.admin_support import create_environment, error, ok
from tests.outbound_support import cli
from tests.segment_payloads import new_id

MAPPING = {
    "user": {"@path": "$.userId"},
    "plan": {"@case": {"operator": "upper", "value": {"@path": "$.properties.plan"}}},
    "label": {"@template": "{{event}} ({{properties.step}})"},
}
TRIGGER = 'type = "track" and event = "Flow Started"'
MESSAGE = {
    "type": "track",
    "event": "Flow Started",
    "userId": "u-1",
    "properties": {"plan": "pro", "step": 2},
}


def path(env: dict[str, Any], direction: str = "inbound", tail: str = "") -> str:
    return f"/api/environments/{env['id']}/mappings/{direction}{tail}"


async def put(
    admin: httpx.AsyncClient,
    env: dict[str, Any],
    mapping: Any = MAPPING,
    trigger: str | None = TRIGGER,
    direction: str = "inbound",
) -> httpx.Response:
    return await admin.put(path(env, direction), json={"trigger": trigger, "mapping": mapping})


async def test_each_change_is_a_new_version_and_the_latest_is_current(
    admin: httpx.AsyncClient,
) -> None:
    env = await create_environment(admin)
    error(await admin.get(path(env)), 404)

    first = ok(await put(admin, env))
    assert (first["version"], first["trigger"], first["mapping"]) == (1, TRIGGER, MAPPING)
    assert first["direction"] == "inbound" and first["environment_id"] == env["id"]
    assert first["created_by"] == "admin API (ADMIN_TOKEN)"
    second = ok(await put(admin, env, {"only": {"@path": "$.event"}}, trigger=None))
    assert (second["version"], second["trigger"]) == (2, None)

    assert ok(await admin.get(path(env))) == second
    history = ok(await admin.get(path(env, tail="/versions")))
    assert [v["version"] for v in history["items"]] == [2, 1]
    assert history["items"][1] == first
    # The other direction is its own mapping.
    error(await admin.get(path(env, "outbound")), 404)
    error(await admin.get(path(env, "sideways")), 404)


async def test_a_bad_definition_is_refused_with_422_naming_each_place(
    admin: httpx.AsyncClient,
) -> None:
    env = await create_environment(admin)
    bad_mapping = {"properties": {"plan": {"@pth": "$.x"}}}
    refused = error(await put(admin, env, bad_mapping, trigger='evnt = "x"'), 422)
    assert refused["error"] == "invalid_mapping"
    assert refused["field"] == "trigger"
    assert refused["problems"] == [
        {
            "where": "trigger",
            "reason": "unknown field 'evnt' (a trigger tests type, event, name, userId,"
            " properties.…, traits.…, context.…) at character 1",
        },
        {
            "where": "mapping.properties.plan.@pth",
            "reason": "unknown directive @pth (did you mean @path?)",
        },
    ]
    assert "mapping.properties.plan.@pth: unknown directive @pth" in refused["detail"]

    path_refused = error(await put(admin, env, {"x": {"@path": "a..b"}}), 422)
    assert path_refused["field"] == "mapping.x.@path"
    trigger_refused = error(await put(admin, env, trigger='type = "track" and'), 422)
    assert trigger_refused["problems"][0]["reason"].endswith("at character 19")
    nul = error(await put(admin, env, {"x": {"@template": "a\u0000b"}}), 422)
    assert nul["problems"] == [
        {
            "where": "mapping.x.@template",
            "reason": "holds a NUL character (\\u0000), which cannot be stored",
        }
    ]
    # Nothing was stored; a body of the wrong shape is a 400 as on every route.
    error(await admin.get(path(env)), 404)
    error(await admin.put(path(env), json={"mapping": []}), 400, field="mapping")
    error(await admin.put(path(env), json={"mapping": {}, "extra": 1}), 400, field="extra")


async def test_revert_makes_the_version_before_current_again(admin: httpx.AsyncClient) -> None:
    env = await create_environment(admin)
    error(await admin.post(path(env, tail="/revert")), 404)
    ok(await put(admin, env))
    assert error(await admin.post(path(env, tail="/revert")), 409)["error"] == "nothing_to_revert"

    ok(await put(admin, env, {"changed": True}, trigger=None))
    back = ok(await admin.post(path(env, tail="/revert")))
    assert (back["version"], back["trigger"], back["mapping"]) == (3, TRIGGER, MAPPING)
    assert ok(await admin.get(path(env)))["version"] == 3


async def test_promote_copies_the_current_version_to_another_environment(
    admin: httpx.AsyncClient,
) -> None:
    staging, production = await create_environment(admin), await create_environment(admin)
    ok(await put(admin, production, {"old": True}, trigger=None, direction="outbound"))
    ok(await put(admin, staging, direction="outbound"))

    promote = path(staging, "outbound", "/promote")
    by_name = ok(await admin.post(promote, params={"to": production["name"]}))
    assert (by_name["environment_id"], by_name["version"]) == (production["id"], 2)
    assert (by_name["trigger"], by_name["mapping"]) == (TRIGGER, MAPPING)
    by_id = ok(await admin.post(promote, params={"to": production["id"]}))
    assert by_id["version"] == 3
    assert ok(await admin.get(path(production, "outbound")))["mapping"] == MAPPING

    error(await admin.post(promote, params={"to": new_id("no-such-env").lower()}), 404)
    error(await admin.post(promote, params={"to": staging["name"]}), 409)
    error(await admin.post(promote), 400, field="to")
    error(
        await admin.post(path(staging, "inbound", "/promote"), params={"to": production["id"]}), 404
    )


async def test_preview_maps_a_sample_message_without_saving_anything(
    admin: httpx.AsyncClient,
) -> None:
    env = await create_environment(admin)
    preview = path(env, tail="/preview")
    error(await admin.post(preview, json={"message": MESSAGE}), 404)  # no mapping yet
    ok(await put(admin, env))

    mapped = ok(await admin.post(preview, json={"message": MESSAGE}))
    assert mapped == {
        "version": 1,
        "matched": True,
        "mapped": {"user": "u-1", "plan": "PRO", "label": "Flow Started (2)"},
        # What would be stored: the message with the mapping's top-level keys added.
        "message": {**MESSAGE, "user": "u-1", "plan": "PRO", "label": "Flow Started (2)"},
        "error": None,
    }
    page = {"type": "page", "name": "Home", "userId": "u-1"}
    assert ok(await admin.post(preview, json={"message": page}))["matched"] is False

    # An unsaved definition, failing on this message: the error names the field.
    failing = {"x": {"@path": {"@path": "$.which"}}}
    tried = ok(await admin.post(preview, json={"message": {"which": 7}, "mapping": failing}))
    assert tried == {
        "version": None,
        "matched": True,
        "mapped": None,
        "message": {"which": 7},  # unmapped, as it would go on
        "error": "mapping.x.@path: @path: expected string, got number",
    }
    # A mapped message must be an object.
    scalar = {"message": MESSAGE, "mapping": {"@path": "$.event"}}
    assert ok(await admin.post(preview, json=scalar))["error"] == (
        "mapping: gave string, not an object"
    )
    refused = error(await admin.post(preview, json={"message": MESSAGE, "mapping": {"@x": 1}}), 422)
    assert refused["field"] == "mapping.@x"
    assert len(ok(await admin.get(path(env, tail="/versions")))["items"]) == 1


async def test_a_read_key_may_read_and_preview_but_not_change(admin: httpx.AsyncClient) -> None:
    env = await create_environment(admin)
    ok(await put(admin, env))
    created = ok(
        await admin.post(
            f"/api/environments/{env['id']}/api-keys",
            json={"name": new_id("key").lower(), "scopes": ["read"]},
        ),
        201,
    )
    key = {"Authorization": f"Bearer {created['key']}"}
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=30, headers=key) as reader:
        assert ok(await reader.get(path(env)))["version"] == 1
        ok(await reader.get(path(env, tail="/versions")))
        ok(await reader.post(path(env, tail="/preview"), json={"message": MESSAGE}))
        error(await put(reader, env), 403)
        error(await reader.post(path(env, tail="/revert")), 403)


async def test_mappings_go_with_their_environment(
    admin: httpx.AsyncClient, sessions: SessionMaker
) -> None:
    env = await create_environment(admin)
    ok(await put(admin, env))
    ok(await put(admin, env, direction="outbound"))
    assert await _versions(sessions, env["id"]) == 2
    assert (await admin.delete(f"/api/environments/{env['id']}")).status_code == 204
    assert await _versions(sessions, env["id"]) == 0


async def _versions(sessions: SessionMaker, env_id: str) -> int:
    async with transaction(sessions) as session:
        count = await session.scalar(
            select(func.count()).where(MappingVersion.environment_id == env_id)
        )
    return int(count or 0)


async def test_the_command_line_sets_shows_reverts_promotes_and_previews(
    admin: httpx.AsyncClient, env_vars: dict[str, str], tmp_path: Path
) -> None:
    staging, production = await create_environment(admin), await create_environment(admin)
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_bytes(orjson.dumps(MAPPING))
    name = staging["name"]

    done = await cli(
        env_vars, "mappings", "set", name, "outbound", str(mapping_file), "--trigger", TRIGGER
    )
    assert done.code == 0 and "version 1" in done.out, done
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"plan": {"@pth": "$.x"}}))
    refused = await cli(env_vars, "mappings", "set", name, "outbound", str(bad))
    assert refused.code == 1, refused
    assert (
        "mapping.plan.@pth: unknown directive @pth" in refused.out
        and "Traceback" not in refused.out
    )

    shown = await cli(env_vars, "mappings", "show", name, "outbound", "--json")
    assert orjson.loads(shown.out)["mapping"] == MAPPING
    message_file = tmp_path / "message.json"
    message_file.write_bytes(orjson.dumps(MESSAGE))
    previewed = await cli(env_vars, "mappings", "preview", name, "outbound", str(message_file))
    assert orjson.loads(previewed.out)["mapped"]["plan"] == "PRO", previewed

    promoted = await cli(
        env_vars, "mappings", "promote", name, "outbound", "--to", production["name"], "--json"
    )
    assert orjson.loads(promoted.out)["environment_id"] == production["id"], promoted
    assert ok(await admin.get(path(production, "outbound")))["created_by"] == "command line"
    assert (await cli(env_vars, "mappings", "revert", name, "outbound")).code == 1  # one version
    versions = await cli(env_vars, "mappings", "versions", production["name"], "outbound")
    assert versions.out.startswith("v1 "), versions
