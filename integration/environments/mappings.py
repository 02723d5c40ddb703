"""An environment's mappings, one per direction, versioned: read, change, revert, promote,
preview. Every change adds a version (the highest is current), checked first: a mapping or
trigger that does not compile is refused with 422, naming where it is wrong.

Services add and flush; the caller commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
from integration.store.models import MAPPING_DIRECTIONS, Environment, MappingVersion

ADMIN: Final = "admin API (ADMIN_TOKEN)"


@dataclass(frozen=True)
class Definition:
    """A trigger and a mapping, compiled: what a message goes through."""

    trigger: Condition | None
    mapping: CompiledMapping

    def apply(self, message: dict[str, Any]) -> MappingPreview:
        """The message mapped, or why not; `version` is the caller's to set."""
        if self.trigger is not None and not self.trigger.matches(message):
            return MappingPreview(version=None, matched=False, mapped=None, error=None)
        try:
            mapped = self.mapping.apply(message)
        except MappingFailed as failed:
            return MappingPreview(version=None, matched=True, mapped=None, error=str(failed))
        if not isinstance(mapped, dict):
            error = f"{self.mapping.where}: gave {type_name(mapped)}, not an object"
            return MappingPreview(version=None, matched=True, mapped=None, error=error)
        return MappingPreview(version=None, matched=True, mapped=mapped, error=None)


def compile_definition(trigger: str | None, mapping: dict[str, Any]) -> Definition:
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
    if trigger is not None and "\x00" in trigger:
        problems.append(Problem("trigger", _NUL))
    if problems:
        raise Unprocessable(
            "; ".join(str(p) for p in problems),
            error="invalid_mapping",
            field=problems[0].where,
            problems=[{"where": p.where, "reason": p.reason} for p in problems],
        )
    return Definition(condition, compiled)


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
    """Check the definition, then store it as the next version."""
    compile_definition(trigger, mapping)
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
    result = compile_definition(trigger, mapping).apply(message)
    return result.model_copy(update={"version": version})


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
