"""Webhook keys and source write keys (hashed), and secrets at rest (encrypted)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from integration.config import Settings

SOURCE_KEY_ALPHABET = string.ascii_letters + string.digits
SOURCE_KEY_CHARS = 32


def new_webhook_key() -> str:
    return secrets.token_urlsafe(32)


def new_source_write_key() -> str:
    """A source write key for the /v1 intake: 32 letters and digits (190 bits), the shape of a
    Segment write key, so that tools that check the shape of the key they are given accept it,
    and so that it can be an HTTP Basic user name (no ':')."""
    return "".join(secrets.choice(SOURCE_KEY_ALPHABET) for _ in range(SOURCE_KEY_CHARS))


def hash_key(key: str) -> str:
    """Keys are 256-bit random tokens: an unsalted SHA-256 is safe and allows an index lookup."""
    return hashlib.sha256(key.encode()).hexdigest()


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)


def mask(secret: str | None) -> str | None:
    if not secret:
        return None
    return "…" + secret[-4:] if len(secret) > 8 else "…"


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"segment-integration/secrets/v1:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class SecretBox:
    """Encrypts secrets (write keys, signing secrets) with a key derived from SECRET_KEY.

    During a rotation `previous` (SECRET_KEY_PREVIOUS) still decrypts what it encrypted, while
    everything new is encrypted with the current key; `rotate` re-encrypts a token with it."""

    def __init__(self, secret_key: str, previous: str | None = None) -> None:
        keys = [_fernet(secret_key)] + ([_fernet(previous)] if previous else [])
        self._fernet = MultiFernet(keys)

    @classmethod
    def of(cls, settings: Settings) -> SecretBox:
        return cls(settings.secret_key or "", settings.secret_key_previous)

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted: was SECRET_KEY changed?") from None

    def rotate(self, token: str) -> str:
        """The same secret, encrypted with the current key (ValueError if no key opens it)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "secret cannot be decrypted with SECRET_KEY or SECRET_KEY_PREVIOUS"
            ) from None
