"""What operators and their tools rely on: health and readiness, Prometheus metrics, request
ids, the Swagger UI served locally, and an OpenAPI document that covers every route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.routing import BaseRoute, Mount, Route

from integration import __version__
from integration.app import create_app
from integration.config import Settings
from tests import processes
from tests.admin_support import error, ok
from tests.segment_payloads import MakeEnv, identify, new_id, track

# healthz / readyz


async def test_healthz(http: httpx.AsyncClient) -> None:
    assert ok(await http.get("/healthz")) == {"status": "ok", "version": __version__}


async def test_the_admin_api_needs_the_token(http: httpx.AsyncClient) -> None:
    error(await http.get("/api/environments"), 401)
    wrong = await http.get("/api/environments", headers={"Authorization": "Bearer nope"})
    assert error(wrong, 401)["error"] == "unauthorized"


async def test_readyz_checks_postgres_and_redis(http: httpx.AsyncClient) -> None:
    assert ok(await http.get("/readyz")) == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok"},
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "down"),
    [("REDIS_URL", "redis"), ("DATABASE_URL", "postgres")],
)
async def test_readyz_is_503_naming_what_is_unreachable(
    env_vars: dict[str, str], setting: str, down: str
) -> None:
    closed = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing",
    }[setting]
    server = processes.serve(env_vars, **{setting: closed})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert ok(await client.get("/healthz"))["status"] == "ok"  # alive, but not ready
            response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "unavailable"
            up = "postgres" if down == "redis" else "redis"
            assert body["checks"] == {down: "unreachable", up: "ok"}
    finally:
        server.stop()


# metrics


def metrics_of(text: str) -> dict[str, list[Sample]]:
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_in_prometheus_text_format(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    inbound = "integration_inbound_messages_total"
    published = "integration_outbound_published_total"
    before = metrics_of((await http.get("/metrics")).text)

    user_id = new_id("user")
    ok(await http.post(env.webhook_path, json=[identify(user_id, {}), identify(user_id, {})]))
    ok(await http.post(env.webhook_path, json=track(user_id, "Report Viewed")))
    error(await http.post(env.webhook_path, json={"type": "track", "userId": user_id}), 400)
    body = track(user_id, "Flow Started")
    ok(await admin.post(f"/api/environments/{env.id}/product-events", json=body), 202)
    ok(await admin.get(f"/api/environments/{env.id}/users"))

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = metrics_of(response.text)

    def delta(family: str, name: str, **labels: str) -> float:
        return value(after[family], name, **labels) - value(before.get(family, []), name, **labels)

    family = "integration_inbound_messages"
    assert delta(family, inbound, type="identify", outcome="accepted") == 2
    assert delta(family, inbound, type="track", outcome="accepted") == 1
    assert delta(family, inbound, type="invalid", outcome="rejected") == 1
    assert delta("integration_outbound_published", published, outcome="stream_off") == 1
    outbound = [name for name in after if name.startswith("integration_outbound_")]
    assert outbound, sorted(after)
    for family in ("integration_segment_responses", "integration_delivery_latency_seconds"):
        assert family in after

    latency = after["integration_http_request_duration_seconds"]
    routes = {s.labels["route"] for s in latency}
    assert "/webhooks/segment/{webhook_key}" in routes
    assert "/api/environments/{env_id}/users" in routes
    assert "/api/environments/{env_id}/product-events" in routes
    assert not [r for r in routes if r.startswith("/environments")], routes
    counted = value(
        latency,
        "integration_http_request_duration_seconds_count",
        route="/webhooks/segment/{webhook_key}",
        method="POST",
        status="400",
    )
    assert counted >= 1
    # Labels are route templates: no webhook key, environment id or user id ever appears.
    for secret in (env.key, str(env.id), user_id):
        assert secret not in response.text


async def test_unknown_message_types_share_one_metric_label(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    """Unknown types are stored, but the caller picks the type: a label per type would let any
    sender grow the metrics without bound."""
    env = await make_environment()
    kind = new_id("custom-type")
    before = metrics_of((await http.get("/metrics")).text)
    message = {"type": kind, "userId": new_id("user"), "messageId": new_id("m")}
    assert ok(await http.post(env.webhook_path, json=message))["stored"] == 1

    text = (await http.get("/metrics")).text
    after = metrics_of(text)
    name, family = "integration_inbound_messages_total", "integration_inbound_messages"
    counted = value(after[family], name, type="other", outcome="accepted")
    assert counted - value(before.get(family, []), name, type="other", outcome="accepted") == 1
    assert kind not in text


@pytest.mark.slow
async def test_several_api_processes_share_the_port_and_add_up_their_metrics(
    env_vars: dict[str, str], make_environment: MakeEnv
) -> None:
    env = await make_environment()
    server = processes.serve(env_vars, WEB_CONCURRENCY="2")
    try:
        prefixes: set[str] = set()
        sent = 40
        for _ in range(sent):
            # A new connection each time, so that either process may take it.
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                response = await client.post(env.webhook_path, json=track(new_id("u"), "E"))
                assert response.status_code == 200, response.text
                # Generated request ids start with a prefix of the process that made them.
                prefixes.add(response.headers["x-request-id"][:22])
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            text = (await client.get("/metrics")).text
    finally:
        server.stop()

    assert len(prefixes) == 2, "one process served every request"
    # A new server starts its counts at zero; whichever process answers, the sum is there.
    after = metrics_of(text)
    family, name = "integration_inbound_messages", "integration_inbound_messages_total"
    assert value(after[family], name, type="track", outcome="accepted") == sent
    latency = after["integration_http_request_duration_seconds"]
    route = "/webhooks/segment/{webhook_key}"
    count = "integration_http_request_duration_seconds_count"
    assert value(latency, count, route=route, method="POST", status="200") == sent


# request ids


async def test_request_id_is_echoed_when_given(http: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/api/environments", "/nowhere"):
        response = await http.get(path, headers={"X-Request-ID": "req-42.abc"})
        assert response.headers["x-request-id"] == "req-42.abc"


async def test_request_id_is_generated_when_missing_or_unusable(
    http: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    seen = set()
    for client, path in ((http, "/healthz"), (admin, "/api/environments"), (http, "/nowhere")):
        response = await client.get(path)
        rid = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
        seen.add(rid)
    assert len(seen) == 3
    too_long = await http.get("/healthz", headers={"X-Request-ID": "x" * 129})
    assert re.fullmatch(r"[0-9a-f]{32}", too_long.headers["x-request-id"])
    empty = await http.get("/healthz", headers={"X-Request-ID": ""})
    assert re.fullmatch(r"[0-9a-f]{32}", empty.headers["x-request-id"])
    assert len(too_long.headers.get_list("x-request-id")) == 1


# docs


async def test_docs_page_uses_the_bundled_swagger_ui(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'src="/docs/static/swagger-ui-bundle.js"' in html
    assert 'href="/docs/static/swagger-ui.css"' in html
    assert "/openapi.json" in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/docs/static/"), src

    script = await http.get("/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text
    css = await http.get("/docs/static/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    missing = await http.get("/docs/static/nope.js")
    assert missing.status_code == 404


# the OpenAPI document


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            yield from walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route | Mount):
            # A Route's path_format drops convertors (`{id:path}`), as OpenAPI names them.
            yield prefix + (route.path_format if isinstance(route, Route) else route.path), route


CONSOLE = "/admin"  # the browser console's pages: HTML for people, not the API's contract


def app_operations(settings: Settings) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves but the console's, found by walking its
    route table."""
    found: set[tuple[str, str]] = set()
    for path, route in walk(list(create_app(settings).routes)):
        if path.startswith(CONSOLE + "/"):
            continue
        if isinstance(route, Mount):
            assert path == "/docs/static", f"unexpected mounted app at {path}"
            continue  # static files of the docs page
        assert isinstance(route, Route)
        found |= {(m.lower(), path) for m in (route.methods or set()) - {"HEAD"}}
    return found


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from refs(item)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


async def test_openapi_documents_every_route(http: httpx.AsyncClient, settings: Settings) -> None:
    doc = ok(await http.get("/openapi.json"))
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["version"] == __version__
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    served = app_operations(settings)
    assert len(served) >= 23, served
    assert served - documented == set(), "routes missing from /openapi.json"
    assert documented - served == set(), "documented routes the app does not serve"
    assert {"/metrics", "/healthz", "/readyz", "/docs", "/openapi.json"} <= set(doc["paths"])


async def test_openapi_operations_describe_bodies_responses_and_security(
    http: httpx.AsyncClient,
) -> None:
    doc = ok(await http.get("/openapi.json"))
    schemas = doc["components"]["schemas"]
    for scheme in ("bearer", "apiKey"):
        found = doc["components"]["securitySchemes"][scheme]
        assert (found["type"], found["scheme"]) == ("http", "bearer"), found
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref

    operation_ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            operation_ids.append(op["operationId"])
            assert op["summary"], where
            params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), where
            success = [code for code in op["responses"] if code.startswith("2")]
            assert len(success) == 1, where
            # The /v1 intake answers in Segment's shapes and takes its write keys.
            intake = path.startswith("/v1/")
            if path.startswith("/api/"):
                # The admin token, and for some routes an API key with the scope named.
                assert op["security"][0] == {"bearer": []}, where
                keys = [[{"apiKey": [scope]}] for scope in ("publish", "read")]
                assert op["security"][1:] in [[], *keys], where
                assert "403" in op["responses"], where
                assert "401" in op["responses"], where
                if "{env_id}" in path:
                    assert "404" in op["responses"], where
            elif intake and method == "post":
                assert op["security"] == [{"writeKey": []}], where
                assert {"400", "401", "413"} <= set(op["responses"]), where
            else:
                assert "security" not in op, where
            if success != ["204"]:
                assert op["responses"][success[0]].get("content"), where
            error_body = "SegmentError" if intake else "ErrorBody"
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{error_body}"}, where
            if method in ("post", "patch", "put"):
                no_body = {
                    "/api/environments/{env_id}/rotate-webhook-key",
                    "/api/environments/{env_id}/rotate-source-write-key",
                    "/api/environments/{env_id}/test-connection",
                    "/api/environments/{env_id}/delivery/resume",
                    "/api/environments/{env_id}/mappings/{direction}/revert",
                    "/api/environments/{env_id}/mappings/{direction}/promote",
                    "/api/environments/{env_id}/tracking-plan/{direction}/draft",
                    "/api/environments/{env_id}/identity-conflicts/{conflict_id}/apply",
                    "/api/environments/{env_id}/identity-conflicts/{conflict_id}/dismiss",
                }
                if path not in no_body:
                    body = op["requestBody"]["content"]["application/json"]["schema"]
                    assert body, where
                    assert "400" in op["responses"], where
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"

    create = doc["paths"]["/api/environments"]["post"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EnvironmentCreated"
    }
    assert "409" in create["responses"]
    assert set(schemas["EnvironmentCreate"]["required"]) == {"name"}
    settings_schema = schemas["EnvironmentSettings"]
    assert settings_schema["additionalProperties"] is False
    assert set(settings_schema["properties"]) == {
        "segment_write_key",
        "stream_enabled",
        "company_property",
        "webhook_signing_secret",
        "segment_api_url",
        "retention_days",
        "store_outbound_events",
        "cors_allowed_origins",
        "blocked_ids",
        "max_anonymous_ids_per_user",
        "allow_identified_merges",
    }
    # Only the secrets (null clears them), the retention (null: keep forever) and the blocked
    # ids (null: the default list) may be null; the other settings are never null.
    clearable = ("segment_write_key", "webhook_signing_secret", "retention_days", "blocked_ids")
    for name, prop in settings_schema["properties"].items():
        nullable = {"type": "null"} in prop.get("anyOf", [])
        assert nullable == (name in clearable), name
        assert prop.get("default", "absent") in ("absent", None), name
    assert schemas["ErrorBody"]["properties"]["field"]["type"] == "string"
    assert schemas["EnvironmentCreate"]["properties"]["name"]["pattern"]
    delete = doc["paths"]["/api/environments/{env_id}"]["delete"]
    assert "204" in delete["responses"] and "409" in delete["responses"]
    assert [p["name"] for p in delete["parameters"] if p["in"] == "query"] == ["force"]
    events = doc["paths"]["/api/environments/{env_id}/events"]["get"]
    assert {p["name"] for p in events["parameters"] if p["in"] == "query"} == {
        "user_id",
        "anonymous_id",
        "company",
        "type",
        "name",
        "direction",
        "since",
        "until",
        "limit",
        "cursor",
    }
    paths = set(doc["paths"])
    calls = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")
    assert {f"/v1/{call}" for call in calls} <= paths
    assert set(doc["paths"]["/v1/{call}"]) == {"options"}
    assert schemas["SegmentError"]["required"] == ["success", "code", "message"]
    assert doc["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
    metrics = doc["paths"]["/metrics"]["get"]
    assert "text/plain" in metrics["responses"]["200"]["content"]
    docs = doc["paths"]["/docs"]["get"]
    assert "text/html" in docs["responses"]["200"]["content"]
