"""What a /v1 call is answered, in Segment's terms: `{"success": true}` (and what was not
valid in a batch), the refusal of a call none of whose messages is valid, and the CORS
headers that let a browser read either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integration.errors import BadRequest
from integration.http.body import bad_request
from integration.outbound.publish import Published
from integration.spec import NoneValid

# An answer lists the first refusals and counts the rest: a 500 KB batch may hold 170,000.
LISTED_REJECTIONS = 100
MAX_DETAIL_CHARS = 200
# What a CORS preflight allows: the one method, and the headers Segment's libraries send.
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding"
PREFLIGHT_MAX_AGE = "600"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to an intake call, once its messages are committed (or, stream off, not
    queued). `origin` is the caller's browser origin when its environment allows it."""

    published: Published
    origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": True}
        if not self.published.stream_enabled:
            out |= {
                "queued": 0,
                "stream_enabled": False,
                "detail": "accepted, not queued: this environment's stream to Segment is off",
            }
        return out | listed(self.published.rejected)

    def headers(self) -> dict[str, str]:
        out = {"X-Stream-Enabled": "true" if self.published.stream_enabled else "false"}
        if self.origin:
            out |= cors_headers(self.origin)
            out["Access-Control-Expose-Headers"] = "X-Stream-Enabled"
        return out


def refusal_of(none: NoneValid) -> BadRequest:
    """A call none of whose messages is valid, refused as Segment's edge refuses it: with the
    first refusals listed when there were several (the route renders it in Segment's shape)."""
    several = listed([r.as_dict() for r in none.rejected]) if none.several else {}
    return bad_request(none, **several)


def listed(rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """The refused messages as an answer lists them: the first LISTED_REJECTIONS (each detail
    cut short), and how many there were; nothing when none was refused."""
    if not rejected:
        return {}
    first = [
        {**r, "detail": str(r.get("detail", ""))[:MAX_DETAIL_CHARS]}
        for r in rejected[:LISTED_REJECTIONS]
    ]
    return {"rejected": first, "rejected_count": len(rejected)}


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight_headers(origin: str) -> dict[str, str]:
    return cors_headers(origin) | {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }
