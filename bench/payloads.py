"""The one message shape every phase sends: a realistic Segment track call of about 1 KB.

Python callers (the peer, our publisher) build it with `track()`; wrk's Lua script gets the
same message as a template with placeholders (`lua_template()`), so both directions send the
same bytes apart from ids and times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

EVENT = "Checklist Task Completed"
USERS = 10_000  # userIds are drawn from this many users
COMPANIES = 200  # company_id is drawn from this many companies

# Placeholders in the Lua template; the values below are only their Python stand-ins.
MID, UID, CID, TS = "@@MID@@", "@@UID@@", "@@CID@@", "@@TS@@"


def properties(company: str) -> dict[str, Any]:
    return {
        "company_id": company,
        "checklist_id": "onboarding-v2",
        "task": "invite_teammates",
        "task_title": "Invite your teammates",
        "step": 3,
        "total_steps": 7,
        "duration_ms": 48210,
        "completed_via": "web",
        "plan": "pro",
        "seats": 12,
        "experiment": {"name": "checklist_order", "variant": "b"},
    }


def context() -> dict[str, Any]:
    return {
        "ip": "203.0.113.9",
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "userAgent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36"
            " (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
        ),
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {
            "path": "/app/checklists/onboarding-v2",
            "referrer": "https://app.example.com/app/home",
            "search": "?tab=tasks",
            "title": "Onboarding checklist",
            "url": "https://app.example.com/app/checklists/onboarding-v2?tab=tasks",
        },
        "campaign": {"name": "spring_launch", "source": "newsletter", "medium": "email"},
    }


def user_id(n: int) -> str:
    return f"user_{n % USERS:05d}"


def company_id(n: int) -> str:
    return f"company_{n % COMPANIES:03d}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track(message_id: str, n: int, timestamp: str | None = None) -> dict[str, Any]:
    """Track message number `n`: user and company cycle through fixed pools."""
    uid = user_id(n)
    return {
        "type": "track",
        "event": EVENT,
        "messageId": message_id,
        "userId": uid,
        "anonymousId": "anon-" + uid,
        "timestamp": timestamp or now_iso(),
        "properties": properties(company_id(n)),
        "context": context(),
        "integrations": {},
    }


def lua_template() -> str:
    """The message as JSON with @@MID@@, @@UID@@, @@CID@@ and @@TS@@ for wrk to fill in."""
    message = {
        "type": "track",
        "event": EVENT,
        "messageId": MID,
        "userId": UID,
        "anonymousId": "anon-" + UID,
        "timestamp": TS,
        "sentAt": TS,
        "properties": properties(CID),
        "context": context(),
        "integrations": {},
        "version": 2,
    }
    return orjson.dumps(message).decode()


def approx_size() -> int:
    return len(orjson.dumps(track("x" * 36, 1)))
