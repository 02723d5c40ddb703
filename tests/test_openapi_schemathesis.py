"""Schemathesis against the real server's /openapi.json: generated requests for every
documented operation, checked for server errors and for answers the document does not allow.

Path parameters are mostly pointed at real rows, or nearly every case would be a 404: an
environment holding users, companies, events and deliveries for the read routes, a scratch
environment for the routes that change settings or rotate keys, one without a write key for
the connection test (so nothing is ever sent out), and a fresh empty environment for DELETE.
Everything this module creates is deleted again at the end, so no other test sees it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from integration.app import create_app
from integration.config import Settings
from integration.http.openapi import build
from tests import processes
from tests.admin_support import UNREACHABLE_API
from tests.conftest import ADMIN_TOKEN
from tests.segment_payloads import alias, group, identify, page, track

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REAL = 0.85  # share of cases whose ids are replaced by real ones
MAX_EXAMPLES = 25  # per operation


@dataclass
class Target:
    """The environments the generated requests are pointed at."""

    client: httpx.Client
    data_id: str
    data_key: str
    scratch_id: str
    no_write_key_id: str
    data_source_key: str = ""
    users: list[str] = field(default_factory=list)
    companies: list[str] = field(default_factory=list)

    def create(self, **settings: Any) -> dict[str, Any]:
        body = {"name": f"st-{uuid.uuid4().hex[:12]}", **settings}
        response = self.client.post("/api/environments", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def send(self, key: str, *messages: dict[str, Any]) -> None:
        response = self.client.post(f"/webhooks/segment/{key}", json=list(messages))
        assert response.status_code == 200, response.text

    def prepare(self, case: schemathesis.Case) -> None:
        """Point the case at real rows most of the time; keep generated ids otherwise."""
        path, method = case.operation.path, case.operation.method.upper()
        params = case.path_parameters
        # Seeded by the generated values, so a failing case replays the same way.
        rng = random.Random(repr(sorted(params.items())) + repr(case.query) + path + method)
        if "env_id" in params and rng.random() < REAL:
            params["env_id"] = self._environment_for(path, method, case, rng)
        if "user_id" in params and rng.random() < 0.6:
            params["user_id"] = self._user_for(method, rng)
        if "group_id" in params and rng.random() < 0.6:
            params["group_id"] = rng.choice(self.companies)
        if "direction" in params and rng.random() < REAL:
            params["direction"] = rng.choice(["inbound", "outbound"])  # a mapping's or plan's
        if "webhook_key" in params and rng.random() < REAL:
            params["webhook_key"] = self.data_key
        # Arbitrary objects are rarely valid Segment messages: send real ones half the time.
        if path.endswith(("/product-events", "/{webhook_key}")) and rng.random() < 0.5:
            case.body = self._messages(rng)
        # The intake: a real source write key (in the body: the header carries the admin
        # token) most of the time, and real messages half the time.
        if path.startswith("/v1/") and method == "POST" and isinstance(case.body, dict):
            rng = random.Random(repr(case.body) + path)  # no parameters here to vary by
            if rng.random() < 0.5:
                messages = self._messages(rng)
                batch = messages if isinstance(messages, list) else [messages]
                single = {k: v for k, v in batch[0].items() if k != "type"}
                case.body = (
                    {"batch": batch} if path.endswith(("/batch", "/import", "/b")) else single
                )
            if rng.random() < REAL:
                case.body["writeKey"] = self.data_source_key

    def _environment_for(
        self, path: str, method: str, case: schemathesis.Case, rng: random.Random
    ) -> str:
        if path == "/api/environments/{env_id}" and method == "DELETE":
            if rng.random() < 0.5:
                return str(self.create()["id"])  # empty: deleted, with or without force
            if case.query:
                case.query.pop("force", None)  # holds data: refused
            return self.data_id
        if path == "/api/environments/{env_id}/test-connection":
            return self.no_write_key_id  # answers without calling out
        if method in ("PATCH", "POST") and not path.endswith(("/product-events", "/replay")):
            return self.scratch_id  # settings and key rotation
        return self.data_id

    def _messages(self, rng: random.Random) -> dict[str, Any] | list[dict[str, Any]]:
        user_id, company = rng.choice(self.users), rng.choice(self.companies)
        made = [
            identify(user_id, {"plan": rng.choice(["free", "pro"]), "seats": rng.randint(1, 50)}),
            track(user_id, "Report Viewed", {"company_id": company}),
            group(user_id, company, {"employees": rng.randint(1, 500)}),
            page(None, "Pricing", anonymousId=f"anon-{rng.randint(0, 9)}"),
        ]
        return rng.choice(made) if rng.random() < 0.5 else rng.sample(made, rng.randint(1, 4))

    def _user_for(self, method: str, rng: random.Random) -> str:
        if method == "DELETE":
            user_id = f"doomed-{uuid.uuid4().hex[:8]}"
            self.send(self.data_key, identify(user_id, {"plan": "pro"}), track(user_id, "Gone"))
            return user_id
        return rng.choice(self.users)


def _fill(target: Target) -> None:
    """Users with traits and anonymous ids, companies with members, every message type, and
    deliveries both pending and dead."""
    for i in range(6):
        user_id, anon = f"user-{i}", f"anon-{i}"
        company = f"company-{i % 3}"
        target.users.append(user_id)
        target.send(
            target.data_key,
            page(None, "Pricing", anonymousId=anon),
            identify(user_id, {"plan": "pro" if i % 2 else "free", "seats": i}, anonymousId=anon),
            group(user_id, company, {"name": f"Company {i % 3}", "employees": 10 * i}),
            track(user_id, "Report Viewed", {"company_id": company, "n": i}),
        )
    target.send(target.data_key, alias("user-0", "legacy-0"))
    target.companies.extend(f"company-{i}" for i in range(3))

    env = f"/api/environments/{target.data_id}"
    settings_ = {"segment_write_key": "wk-schemathesis-0001", "segment_api_url": UNREACHABLE_API}
    assert target.client.patch(env, json=settings_).status_code == 200
    assert target.client.patch(env, json={"stream_enabled": True}).status_code == 200
    oversized = track("user-1", "Huge", {"blob": "x" * 40_000})
    events = [track("user-1", "Flow Started"), oversized]
    assert target.client.post(f"{env}/product-events", json=events).status_code == 202
    # Off again: the pending rows stay pending (no worker sweeps a stream that is off).
    assert target.client.patch(env, json={"stream_enabled": False}).status_code == 200


@pytest.fixture(scope="module")
def target(server: processes.Process) -> Iterator[Target]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        before = {e["id"] for e in client.get("/api/environments").json()["items"]}
        data = Target(client, "", "", "", "")
        try:
            created = data.create()
            data.data_id, data.data_key = created["id"], created["webhook_key"]
            data.data_source_key = created["source_write_key"]
            data.scratch_id = data.create(segment_api_url=UNREACHABLE_API)["id"]
            data.no_write_key_id = data.create()["id"]
            _fill(data)
            yield data
        finally:
            # Everything made here goes, so no later test (or worker) meets it.
            for env in client.get("/api/environments").json()["items"]:
                if env["id"] not in before:
                    response = client.delete(f"/api/environments/{env['id']}?force=true")
                    assert response.status_code == 204, response.text


@pytest.fixture(scope="module")
def api_schema(server: processes.Process) -> BaseSchema:
    """The document the running server serves, as schemathesis loads it."""
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def _documented() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation, from the app's own route table: the test items are
    known before the server starts; `test_every_served_operation_is_fuzzed` checks them
    against what the server documents."""
    placeholders = Settings(
        database_url="postgresql://unused@127.0.0.1:1/unused",
        secret_key="unused-secret-key-0000-0000-0000-0000",
        admin_token="unused-admin-token-0000-0000-0000-0000",
    )
    doc = build(create_app(placeholders).routes)
    return sorted((method.upper(), path) for path, item in doc["paths"].items() for method in item)


OPERATIONS = _documented()


def test_every_served_operation_is_fuzzed(api_schema: BaseSchema) -> None:
    paths = api_schema.raw_schema["paths"]
    served = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_answers_as_documented(
    method: str, path: str, api_schema: BaseSchema, target: Target
) -> None:
    operation = api_schema[path][method]
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    negative = operation.as_strategy(GenerationMode.NEGATIVE)
    # Mostly valid requests; invalid ones (which include requests without credentials) for
    # about one in five (Hypothesis leans to small numbers, so to positive ones).
    cases = st.integers(0, 4).flatmap(lambda n: negative if n == 4 else positive)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # one inner function serves every operation: keep no examples around
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def answers_as_documented(case: schemathesis.Case) -> None:
        target.prepare(case)
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    answers_as_documented()
