"""X-Signature: what Segment's Webhooks destinations sign, checked in constant time.

- Classic Webhooks (and Webhooks (Actions) without batching) sign the whole body: hex
  HMAC-SHA1 of `JSON.stringify(body)` with the shared secret.
- Webhooks (Actions) with batching post a JSON array but sign only its FIRST event:
  HMAC-SHA1 of `JSON.stringify(body[0])` (the destination's `extendRequest` sees one payload).
  A fix that signs the whole body is discussed upstream, so both forms are accepted.

`JSON.stringify` of an array is its elements' `JSON.stringify` joined by commas, so the bytes of
the first element as they appear in the raw body are exactly what was signed. They are taken
from the body as sent: encoding the parsed element again could differ from JavaScript in number
formatting (`1.0` vs `1`, exponents) and escaping, and the signature would no longer match.

For a batch signed over its first event this proves only that the first event came from
Segment; the key in the URL is the credential for the rest. So the service holds such a batch to
two more rules (service.py, `Inbound._vouch`): a `delete` counts only as that first event, and
when the first event is one already received (a captured signature replayed with a new tail),
nothing new in the batch is stored. SECURITY.md, "What the webhook signature proves".
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

# A JSON string (escapes included), a bracket, or a comma: all the scanner needs to find where
# the first element ends. The string pattern is the unrolled form, linear in its length.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
_SPACE = b" \t\r\n"


class Signed(enum.Enum):
    """What a valid X-Signature covers."""

    BODY = "body"  # the whole body: every message in it
    FIRST = "first"  # only the first element of an array (Webhooks (Actions) batching)


def check(secret: str, body: bytes, given: str | None) -> Signed | None:
    """What `given` signs: the whole body, or (for an array) its first element; None if neither."""
    if not given:
        return None
    given_bytes = given.strip().lower().encode("ascii", "replace")
    key = secret.encode()
    if _matches(key, body, given_bytes):
        return Signed.BODY
    first = first_element(body)
    if first is not None and _matches(key, first, given_bytes):
        return Signed.FIRST
    return None


def valid(secret: str, body: bytes, given: str | None) -> bool:
    """True if `given` is the HMAC of the whole body or, for an array, of its first element."""
    return check(secret, body, given) is not None


def _matches(key: bytes, signed: bytes, given: bytes) -> bool:
    expected = hmac.new(key, signed, hashlib.sha1).hexdigest().encode()
    return hmac.compare_digest(expected, given)


def first_element(body: bytes) -> bytes | None:
    """The raw bytes of the first element of a JSON array body, or None if the body is not an
    array with at least one element. Reads only as far as that element ends."""
    start = _skip_space(body, 0)
    if start >= len(body) or body[start] != ord("["):
        return None
    start = _skip_space(body, start + 1)
    if start >= len(body) or body[start] == ord("]"):
        return None
    depth = 0
    for token in _TOKEN.finditer(body, start):
        kind = token.group()[:1]
        if kind in (b"[", b"{"):
            depth += 1
        elif kind in (b"]", b"}"):
            depth -= 1
            if depth < 0:  # the array closed after a scalar first element
                return body[start : token.start()].rstrip(_SPACE)
        elif kind == b",":
            if depth == 0:
                return body[start : token.start()].rstrip(_SPACE)
            continue
        if depth == 0:
            return body[start : token.end()]
    return None


def _skip_space(body: bytes, index: int) -> int:
    while index < len(body) and body[index] in _SPACE:
        index += 1
    return index
