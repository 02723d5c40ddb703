"""Realistic Segment Webhooks-destination messages, and queries for what the store holds.

The builders produce what Segment's Webhooks destination really posts: a full `context`
(library, ip, page, userAgent, locale, traits), `integrations`, `messageId`, the four
timestamps, `channel` and `version`. Tests change only the fields they care about.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from integration.store.db import SessionMaker
from integration.store.models import AnonymousId, Company, Event, Membership, User
from tests.conftest import TestEnvironment

# Named so that pytest does not try to collect it as a test class where it is imported.
Env = TestEnvironment
MakeEnv = Callable[..., Awaitable[TestEnvironment]]

T0 = datetime(2024, 5, 14, 9, 30, 0, tzinfo=UTC)
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def at(minutes: float) -> datetime:
    """A moment `minutes` after T0: tests speak of message times relative to one origin."""
    return T0 + timedelta(minutes=minutes)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def message(kind: str, *, when: datetime = T0, **fields: Any) -> dict[str, Any]:
    """One message as the Webhooks destination posts it. `fields` override or add keys;
    a value of None removes the key."""
    body: dict[str, Any] = {
        "type": kind,
        "messageId": f"ajs-next-{uuid.uuid4().hex}",
        "channel": "client",
        "context": {
            "library": {"name": "analytics.js", "version": "next-1.64.0"},
            "ip": "203.0.113.42",
            "locale": "en-US",
            "page": {
                "path": "/app/projects",
                "referrer": "https://www.google.com/",
                "search": "?tab=active",
                "title": "Projects · Acme",
                "url": "https://app.acme.test/app/projects?tab=active",
            },
            "userAgent": USER_AGENT,
            "timezone": "Europe/Amsterdam",
            "traits": {"email": "ada@acme.test"},
        },
        "integrations": {"All": True, "Mixpanel": False},
        "originalTimestamp": iso(when - timedelta(milliseconds=250)),
        "timestamp": iso(when),
        "sentAt": iso(when - timedelta(milliseconds=200)),
        "receivedAt": iso(when + timedelta(milliseconds=40)),
        "version": 2,
    }
    for key, value in fields.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def identify(user_id: str | None, traits: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return message("identify", userId=user_id, traits=traits, **fields)


def track(
    user_id: str | None, event: str, properties: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    return message("track", userId=user_id, event=event, properties=properties or {}, **fields)


def page(user_id: str | None, name: str, **fields: Any) -> dict[str, Any]:
    properties = {
        "path": "/pricing",
        "title": "Pricing · Acme",
        "url": "https://acme.test/pricing",
        "referrer": "https://acme.test/",
    }
    return message("page", userId=user_id, name=name, properties=properties, **fields)


def screen(user_id: str | None, name: str, **fields: Any) -> dict[str, Any]:
    context = message("screen")["context"]
    context.pop("page")
    context["library"] = {"name": "analytics-ios", "version": "4.1.8"}
    context["app"] = {"name": "Acme", "version": "3.2.1", "build": "3021"}
    context["device"] = {"manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"}
    context["os"] = {"name": "iOS", "version": "17.4.1"}
    fields.setdefault("context", context)
    fields.setdefault("channel", "mobile")
    return message("screen", userId=user_id, name=name, properties={"tab": "overview"}, **fields)


def group(
    user_id: str | None, group_id: str | int | None, traits: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    return message("group", userId=user_id, groupId=group_id, traits=traits, **fields)


def alias(user_id: str | None, previous_id: str | None, **fields: Any) -> dict[str, Any]:
    return message("alias", userId=user_id, previousId=previous_id, **fields)


# What the store holds, per environment.


async def user(sessions: SessionMaker, env_id: uuid.UUID, user_id: str) -> User | None:
    async with sessions() as s:
        stmt = select(User).where(User.environment_id == env_id, User.user_id == user_id)
        return (await s.scalars(stmt)).one_or_none()


async def company(sessions: SessionMaker, env_id: uuid.UUID, group_id: str) -> Company | None:
    async with sessions() as s:
        stmt = select(Company).where(Company.environment_id == env_id, Company.group_id == group_id)
        return (await s.scalars(stmt)).one_or_none()


async def events(sessions: SessionMaker, env_id: uuid.UUID) -> list[Event]:
    async with sessions() as s:
        stmt = select(Event).where(Event.environment_id == env_id).order_by(Event.id)
        return list(await s.scalars(stmt))


async def event(sessions: SessionMaker, env_id: uuid.UUID, message_id: str) -> Event:
    async with sessions() as s:
        stmt = select(Event).where(Event.environment_id == env_id, Event.message_id == message_id)
        return (await s.scalars(stmt)).one()


async def memberships(sessions: SessionMaker, env_id: uuid.UUID) -> set[tuple[str, str]]:
    async with sessions() as s:
        stmt = select(Membership.user_id, Membership.group_id).where(
            Membership.environment_id == env_id
        )
        return {(u, g) for u, g in (await s.execute(stmt)).all()}


async def anonymous_ids(sessions: SessionMaker, env_id: uuid.UUID) -> dict[str, str]:
    async with sessions() as s:
        stmt = select(AnonymousId.anonymous_id, AnonymousId.user_id).where(
            AnonymousId.environment_id == env_id
        )
        return {a: u for a, u in (await s.execute(stmt)).all()}


COUNTED: dict[str, InstrumentedAttribute[Any]] = {
    "events": Event.environment_id,
    "users": User.environment_id,
    "companies": Company.environment_id,
    "memberships": Membership.environment_id,
    "anonymous_ids": AnonymousId.environment_id,
}


async def counts(sessions: SessionMaker, env_id: uuid.UUID) -> dict[str, int]:
    """Rows per table for one environment: `{"events": 0, ...}` means nothing was stored."""
    out: dict[str, int] = {}
    async with sessions() as s:
        for table, column in COUNTED.items():
            out[table] = await s.scalar(select(func.count()).where(column == env_id)) or 0
    return out


NOTHING = dict.fromkeys(COUNTED, 0)


# Segment's own deletion requests, byte for byte as Segment publishes them (issue #19.1).

# segmentio/segment-docs, src/partners/spec.md, "Delete": a Go time string in originalTimestamp,
# null context and integrations.
PARTNER_SPEC_DELETE = b"""{
  "type":"delete",
  "channel":"server",
  "userId":"507f191e81",
  "context":null,
  "integrations":null,
  "messageId":"delete-reg-6543321::job-2-P0OJ3CTID1",
  "projectId":"P0OJ3CTID1",
  "timestamp":"2020-05-09T23:54:49.209Z",
  "receivedAt":"2020-05-09T23:54:49.209Z",
  "sentAt":"2020-05-09T17:49:00.000Z",
  "originalTimestamp":"2020-05-09 23:54:49.209808489 +0000 UTC m=+70366.298768264"
}"""

# segmentio/segment-docs, src/connections/destinations/catalog/refersion/index.md, "Delete":
# `[]` for context and integrations (how PHP encodes an empty object).
REFERSION_DELETE = b"""{
    "type": "delete",
    "channel": "server",
    "messageId": "delete-022bb90c-bbac-11e4-8dfc-aa07a5b093db",
    "projectId": "abcd123",
    "userId": "5678",
    "context": [],
    "integrations": [],
    "email": "peter@example.com",
    "receivedAt": "2019-02-19T23:58:54.387Z",
    "sentAt": "2019-02-19T21:58:54.387Z",
    "originalTimestamp": "2019-02-19T23:58:54.387Z",
    "timestamp": "2019-02-19T23:58:54.387Z"
}"""
