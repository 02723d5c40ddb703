"""An environment's mappings, one per direction, versioned: read, change, revert, promote,
preview. Every change adds a version (the highest is current), checked first: a mapping or
trigger that does not compile is refused with 422, naming where it is wrong.

Services add and flush; the caller commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from integration.environments import service as environments
from integration.environments.schemas import MappingOut, MappingPreview
from integration.errors import Conflict, NotFound, Unprocessable
from integration.mapping import (
    CompiledMapping,
    Condition,
    InvalidMapping,
    MappingFailed,
    Problem,
    compile_mapping,
    parse_condition,
    paths,
)
from integration.mapping.values import type_name
from integration.spec import DELETE, Message, MessageError, encode, parse
from integration.store.db import announce_on_commit
from integration.store.models import (
    INBOUND,
    MAPPING_DIRECTIONS,
    OUTBOUND,
    Environment,
    MappingVersion,
)

ADMIN: Final = "admin API (ADMIN_TOKEN)"


# Keys a mapping may not set: what dedupe goes by (messageId), what the message is (type),
# and, inbound, when Segment received it (receivedAt).
FIXED_KEYS: Final = {INBOUND: ("messageId", "type", "receivedAt"), OUTBOUND: ("messageId", "type")}


@dataclass(frozen=True, slots=True)
class Mapped:
    """One message through a definition: what is stored (inbound) or sent (outbound) and what a
    preview shows, from the same call. `message` is the mapped message, or the message as it
    came when the trigger did not select it or the mapping failed on it (`error`)."""

    message: dict[str, Any]
    matched: bool
    mapped: dict[str, Any] | None = None  # the mapping's own output
    error: str | None = None
    parsed: Message | None = None  # `message` validated, when the mapping applied
    encoded: bytes | None = None  # and its one encoding

    def preview(self, version: int | None) -> MappingPreview:
        return MappingPreview(
            version=version,
            matched=self.matched,
            mapped=self.mapped,
            message=self.message,
            error=self.error,
        )


@dataclass(frozen=True)
class Definition:
    """A trigger and a mapping, compiled for one direction: what a message goes through."""

    trigger: Condition | None
    mapping: CompiledMapping
    direction: str

    def apply(self, message: dict[str, Any], *, now: datetime) -> Mapped:
        """The message to store or send. The mapping's top-level keys replace the message's
        keys of the same name; the result is validated again as the pipeline validates what
        arrives (spec.parse), and a result that is not valid leaves the message unmapped. A
        GDPR `delete` is never mapped: nothing may stand between it and the erasure."""
        if message.get("type") == DELETE or (
            self.trigger is not None and not self.trigger.matches(message)
        ):
            return Mapped(message, matched=False)
        try:
            mapped = self.mapping.apply(message)
        except MappingFailed as failed:
            return Mapped(message, matched=True, error=str(failed))
        if not isinstance(mapped, dict):
            error = f"{self.mapping.where}: gave {type_name(mapped)}, not an object"
            return Mapped(message, matched=True, error=error)
        for key in FIXED_KEYS[self.direction]:
            if key in mapped:  # set through a directive, which compiling could not see
                error = f"{paths.child(self.mapping.where, key)}: {_fixed(key)}"
                return Mapped(message, matched=True, mapped=mapped, error=error)
        return self._validated(message, mapped, now)

    def _validated(self, message: dict[str, Any], mapped: dict[str, Any], now: datetime) -> Mapped:
        result = {**message, **mapped}
        try:
            encoded = encode(result)
            parsed = parse(
                result, now=now, encoded=encoded, keep_bad_times=self.direction == INBOUND
            )
        except MessageError as invalid:
            error = f"{self.mapping.where}: the mapped message is not valid: {invalid.detail}"
            return Mapped(message, matched=True, mapped=mapped, error=error)
        return Mapped(result, True, mapped, None, parsed, encoded)


def _fixed(key: str) -> str:
    return f"a mapping cannot set {key} (the message keeps its own)"


def compile_definition(trigger: str | None, mapping: dict[str, Any], direction: str) -> Definition:
    """Both compiled, or Unprocessable listing every problem of both."""
    problems: list[Problem] = []
    condition: Condition | None = None
    if trigger is not None:
        try:
            condition = parse_condition(trigger, where="trigger")
        except InvalidMapping as invalid:
            problems += invalid.problems
    try:
        compiled = compile_mapping(mapping, where="mapping")
    except InvalidMapping as invalid:
        problems += invalid.problems
    else:
        problems += _nul_problems(mapping, "mapping")
    problems += [
        Problem(paths.child("mapping", key), _fixed(key))
        for key in FIXED_KEYS[direction]
        if key in mapping
    ]
    if trigger is not None and "\x00" in trigger:
        problems.append(Problem("trigger", _NUL))
    if problems:
        raise Unprocessable(
            "; ".join(str(p) for p in problems),
            error="invalid_mapping",
            field=problems[0].where,
            problems=[{"where": p.where, "reason": p.reason} for p in problems],
        )
    return Definition(condition, compiled, direction)


_NUL = "holds a NUL character (\\u0000), which cannot be stored"


def _nul_problems(value: object, where: str) -> list[Problem]:
    """Where a NUL is (Postgres text and jsonb refuse it), in a mapping that compiled (so it is
    no deeper than the compiler allows)."""
    if isinstance(value, str):
        return [Problem(where, _NUL)] if "\x00" in value else []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nul_problems(v, paths.item(where, i))]
    if isinstance(value, dict):
        found = [Problem(where, f"a key {_NUL}") for k in value if "\x00" in k]
        inside = [p for k, v in value.items() for p in _nul_problems(v, paths.child(where, k))]
        return found + inside
    return []


def check_direction(direction: str) -> str:
    if direction not in MAPPING_DIRECTIONS:
        raise NotFound(f"no direction {direction!r}: mappings are inbound or outbound")
    return direction


async def current(session: AsyncSession, env: Environment, direction: str) -> MappingVersion:
    found: MappingVersion | None = await session.scalar(
        _versions(env.id, direction).order_by(MappingVersion.version.desc()).limit(1)
    )
    if found is None:
        raise NotFound(f"{env.name} has no {direction} mapping")
    return found


async def history(session: AsyncSession, env: Environment, direction: str) -> list[MappingVersion]:
    """Every version, newest first."""
    rows = await session.scalars(
        _versions(env.id, direction).order_by(MappingVersion.version.desc())
    )
    return list(rows)


async def change(
    session: AsyncSession,
    env: Environment,
    direction: str,
    *,
    trigger: str | None,
    mapping: dict[str, Any],
    by: str = ADMIN,
) -> MappingVersion:
    """Check the definition, then store it as the next version; every process maps with it
    once this transaction commits (announced then, as environment changes are)."""
    compile_definition(trigger, mapping, direction)
    latest = await session.scalar(
        select(func.max(MappingVersion.version)).where(
            MappingVersion.environment_id == env.id, MappingVersion.direction == direction
        )
    )
    row = {
        "environment_id": env.id,
        "direction": direction,
        "version": (latest or 0) + 1,
        "trigger": trigger,
        "mapping": mapping,
        "created_by": by,
    }
    # Two changes at once read the same latest version; the second finds its number taken.
    added: MappingVersion | None = await session.scalar(
        insert(MappingVersion).values(row).on_conflict_do_nothing().returning(MappingVersion)
    )
    if added is None:
        raise Conflict(
            f"the {direction} mapping changed at the same time; read it and try again",
            error="mapping_changed",
        )
    announce_on_commit(session)
    return added


async def revert(
    session: AsyncSession, env: Environment, direction: str, *, by: str = ADMIN
) -> MappingVersion:
    """The version before the current one becomes current again, as a new version."""
    last_two = list(
        await session.scalars(
            _versions(env.id, direction).order_by(MappingVersion.version.desc()).limit(2)
        )
    )
    if not last_two:
        raise NotFound(f"{env.name} has no {direction} mapping")
    if len(last_two) < 2:
        raise Conflict(
            f"{env.name}'s {direction} mapping has no earlier version to go back to",
            error="nothing_to_revert",
        )
    earlier = last_two[1]
    return await change(
        session, env, direction, trigger=earlier.trigger, mapping=earlier.mapping, by=by
    )


async def promote(
    session: AsyncSession, env: Environment, direction: str, to: str, *, by: str = ADMIN
) -> MappingVersion:
    """The current version, as the next version of another environment's (named or by id)."""
    target = await _environment(session, to)
    if target.id == env.id:
        raise Conflict(
            "promote to another environment, not to the same one", error="same_environment"
        )
    source = await current(session, env, direction)
    return await change(
        session, target, direction, trigger=source.trigger, mapping=source.mapping, by=by
    )


async def preview(
    session: AsyncSession,
    env: Environment,
    direction: str,
    message: dict[str, Any],
    *,
    trigger: str | None = None,
    mapping: dict[str, Any] | None = None,
) -> MappingPreview:
    """What the given definition, else the current version, makes of a sample message."""
    version: int | None = None
    if mapping is None:
        stored = await current(session, env, direction)
        trigger, mapping, version = stored.trigger, stored.mapping, stored.version
    definition = compile_definition(trigger, mapping, direction)
    return definition.apply(message, now=datetime.now(UTC)).preview(version)


def describe(row: MappingVersion) -> MappingOut:
    return MappingOut(
        environment_id=str(row.environment_id),
        direction=row.direction,
        version=row.version,
        trigger=row.trigger,
        mapping=row.mapping,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _versions(env_id: uuid.UUID, direction: str) -> Select[MappingVersion]:
    return select(MappingVersion).where(
        MappingVersion.environment_id == env_id, MappingVersion.direction == direction
    )


async def _environment(session: AsyncSession, ref: str) -> Environment:
    try:
        uuid.UUID(ref)
    except ValueError:
        return await environments.by_name(session, ref)
    return await environments.get(session, ref)
