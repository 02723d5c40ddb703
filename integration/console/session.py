"""The console's session: a signed cookie, and the CSRF token tied to it.

The cookie holds no secret, only a random session id, whether it signed in, and when it
expires, with an HMAC-SHA256 over them. The signing key is derived from SECRET_KEY and from
ADMIN_TOKEN: changing either (a leaked token, a rotation) ends every session at once, and a
cookie signed under another installation's secret is refused. Nothing is kept on the server,
so API processes stay stateless; a signed-out cookie is cleared in the browser, and a copy
taken before that dies at its expiry.

A form's CSRF token is an HMAC of the session id under the same key: an attacker's page cannot
read it (the cookie is HttpOnly and SameSite=Strict, the pages are same-origin), and a token
from another session does not fit this one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from integration.crypto import constant_time_equal

COOKIE = "console_session"
# A working day: long enough not to interrupt an operator, short enough that a cookie copied
# off a shared machine does not open the console for long.
LIFETIME_SECONDS = 8 * 3600
# A visitor who has not signed in yet holds a session too, so the sign-in form has a CSRF
# token; it is replaced by a new one at sign-in (no session id survives authentication).
ANONYMOUS_LIFETIME_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    signed_in: bool
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Issues and checks session cookies and CSRF tokens with a key of this installation."""

    def __init__(self, secret_key: str, admin_token: str) -> None:
        token_digest = hashlib.sha256(admin_token.encode()).digest()
        self._key = hmac.new(
            secret_key.encode(),
            b"segment-integration/console-session/v1:" + token_digest,
            hashlib.sha256,
        ).digest()

    def _mac(self, purpose: bytes, data: bytes) -> str:
        return _b64(hmac.new(self._key, purpose + b":" + data, hashlib.sha256).digest())

    def issue(self, *, signed_in: bool, now: float | None = None) -> tuple[str, Session]:
        """A new session (a fresh id) and its cookie value."""
        lifetime = LIFETIME_SECONDS if signed_in else ANONYMOUS_LIFETIME_SECONDS
        session = Session(secrets.token_urlsafe(16), signed_in, int(now or time.time()) + lifetime)
        payload = _b64(orjson.dumps([session.id, session.signed_in, session.expires]))
        return f"{payload}.{self._mac(b'cookie', payload.encode())}", session

    def read(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session the cookie holds, or None if it is absent, forged, or expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 512:
            return None
        payload, mac = cookie.split(".")
        if not constant_time_equal(mac, self._mac(b"cookie", payload.encode())):
            return None
        try:
            sid, signed_in, expires = orjson.loads(_unb64(payload))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None
        if not isinstance(sid, str) or not isinstance(signed_in, bool):
            return None
        if not isinstance(expires, int) or expires <= (now or time.time()):
            return None
        return Session(sid, signed_in, expires)

    def csrf_token(self, session: Session) -> str:
        return self._mac(b"csrf", session.id.encode())

    def csrf_valid(self, session: Session, token: str | None) -> bool:
        return bool(token) and constant_time_equal(token or "", self.csrf_token(session))
