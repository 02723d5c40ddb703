"""SECRET_KEY against the database: the canary checked at start, and the rotation to a new key.

A wrong SECRET_KEY used to go unnoticed until a secret was read: plain-text 500s in the API,
deliveries stuck pending in the worker. So the first process to start stores a canary, a
known text encrypted with SECRET_KEY, in `system_state`; every process that decrypts checks
it before it starts, and refuses with a message naming SECRET_KEY.

Rotation: run everything with the new key as SECRET_KEY and the old one as
SECRET_KEY_PREVIOUS (both decrypt, the new one encrypts), run `secret-key rotate` to
re-encrypt every stored secret and the canary with the new key, then drop
SECRET_KEY_PREVIOUS.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from integration.config import ConfigError
from integration.crypto import SecretBox
from integration.store.db import SessionMaker, transaction
from integration.store.models import Environment, SystemState

CANARY_KEY = "secret_key_canary"
CANARY_TEXT = "segment-integration: SECRET_KEY canary v1"
SECRET_FIELDS = ("segment_write_key", "webhook_signing_secret")

MISMATCH = (
    "SECRET_KEY does not match the key this database's secrets were encrypted with. "
    "Start with the SECRET_KEY used before. To change it, set the old key as "
    "SECRET_KEY_PREVIOUS and the new one as SECRET_KEY, run "
    "`python -m integration secret-key rotate`, then remove SECRET_KEY_PREVIOUS (SECURITY.md)."
)
NO_SCHEMA = "the database has no schema yet: run `python -m integration migrate` first"


class SecretKeyMismatch(ConfigError):
    """SECRET_KEY (and SECRET_KEY_PREVIOUS) cannot open what the database holds."""


def _opens(box: SecretBox, token: str) -> bool:
    try:
        box.decrypt(token)
        return True
    except ValueError:
        return False


async def _unreadable(session: AsyncSession, box: SecretBox) -> list[str]:
    """`environment.field` of every stored secret no key opens (the table is small)."""
    bad: list[str] = []
    for env in await session.scalars(select(Environment).order_by(Environment.name)):
        for name in SECRET_FIELDS:
            token = getattr(env, name)
            if token and not _opens(box, token):
                bad.append(f"{env.name}.{name}")
    return bad


async def verify(sessions: SessionMaker, box: SecretBox) -> None:
    """Raise SecretKeyMismatch unless `box` opens the canary. On the first start there is no
    canary yet: it is made, once every secret already stored (a deployment from before the
    canary) has been checked to open with this key."""
    try:
        async with transaction(sessions) as session:
            canary = await session.get(SystemState, CANARY_KEY)
            if canary is None:
                if await _unreadable(session, box):
                    raise SecretKeyMismatch(MISMATCH)
                # Two first starts at once: one insert wins, and both check what was kept.
                await session.execute(
                    insert(SystemState)
                    .values(key=CANARY_KEY, value=box.encrypt(CANARY_TEXT))
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                canary = await session.get(SystemState, CANARY_KEY, populate_existing=True)
            if canary is None or not _opens(box, canary.value):
                raise SecretKeyMismatch(MISMATCH)
    except ProgrammingError as exc:
        if "system_state" in str(exc.orig):
            raise ConfigError(NO_SCHEMA) from None
        raise


@dataclass(frozen=True, slots=True)
class Rotated:
    secrets: int
    environments: int


async def rotate(sessions: SessionMaker, box: SecretBox) -> Rotated:
    """Re-encrypt every stored secret and the canary with the current key, in one transaction
    (rows locked: a settings change waits for it). Changes nothing unless every secret opens."""
    async with transaction(sessions) as session:
        canary = await session.get(SystemState, CANARY_KEY, with_for_update=True)
        if canary is not None and not _opens(box, canary.value):
            raise SecretKeyMismatch(MISMATCH)
        envs = list(
            await session.scalars(select(Environment).order_by(Environment.id).with_for_update())
        )
        bad = await _unreadable(session, box)
        if bad:
            raise SecretKeyMismatch(
                "neither SECRET_KEY nor SECRET_KEY_PREVIOUS opens "
                + ", ".join(bad)
                + ": nothing was changed. Set the key they were encrypted with as "
                "SECRET_KEY_PREVIOUS, or clear them (env set NAME --write-key '')."
            )
        count = 0
        for env in envs:
            for name in SECRET_FIELDS:
                token = getattr(env, name)
                if token:
                    setattr(env, name, box.rotate(token))
                    count += 1
        value = box.encrypt(CANARY_TEXT)
        if canary is None:
            session.add(SystemState(key=CANARY_KEY, value=value))
        else:
            canary.value = value
            canary.updated_at = func.now()
        await session.flush()
    return Rotated(secrets=count, environments=len(envs))
