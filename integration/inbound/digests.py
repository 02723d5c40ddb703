"""Keyed digests: what the store keeps in place of an erased person's ids.

An erasure leaves two things behind, and neither may name the person: the audit row (which
userId was erased) and the messageIds of the erased messages (so that Segment's redelivery of
one is recognised and changes nothing, issue #19.2). Both are HMAC-SHA256 under a key of this
install, derived from SECRET_KEY: without that key a digest cannot be tested against a guessed
id, as an unsalted SHA-256 of a guessable userId (`user_42`, an email) could.

The messageId digests are computed by Postgres (`keyed_digest`, migration 0008), inside the
statements that erase and that insert events, so the check costs no round trip: the function
is HMAC-SHA256 written out (`sha256(opad || sha256(ipad || text))`), and this module hands it
the key's two padded blocks. During a SECRET_KEY rotation (SECRET_KEY_PREVIOUS set) a digest
made under either key is recognised; once SECRET_KEY_PREVIOUS is removed, digests made under it
no longer match anything (SECURITY.md: keep it for a day, Segment retries for about 4 hours).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from integration.config import Settings

PURPOSE = b"segment-integration/erasure-digests/v1"
_BLOCK = 64  # SHA-256's block size, which HMAC pads its key to


def _derive(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), PURPOSE, hashlib.sha256).digest()


def _pads(key: bytes) -> tuple[bytes, bytes]:
    block = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


@dataclass(frozen=True, slots=True)
class InstallKey:
    """The install's digest key (and, during a SECRET_KEY rotation, the previous one)."""

    current: bytes
    previous: bytes | None = None

    @classmethod
    def of(cls, settings: Settings) -> InstallKey:
        if not settings.secret_key:
            raise ValueError("SECRET_KEY is required to erase or to receive messages")
        previous = settings.secret_key_previous
        return cls(_derive(settings.secret_key), _derive(previous) if previous else None)

    def hexdigest(self, value: str) -> str:
        """HMAC-SHA256 (hex) of `value` under the current key: the audit's userId digest."""
        data = value.encode("utf-8", "surrogatepass")
        return hmac.new(self.current, data, hashlib.sha256).hexdigest()

    def sql_args(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The padded blocks for `keyed_digest`: the current key's, then the previous key's
        (the current one's again when there is none, so that statements keep one shape)."""
        current = _pads(self.current)
        previous = _pads(self.previous) if self.previous else current
        return (*current, *previous)
