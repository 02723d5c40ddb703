"""Webhook keys (hashed) and secrets at rest (encrypted)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


def new_webhook_key() -> str:
    return secrets.token_urlsafe(32)


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


class SecretBox:
    """Encrypts secrets (write keys, signing secrets) with a key derived from SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"segment-integration/secrets/v1:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted: was SECRET_KEY changed?") from None
