"""The tracking plan's step in the webhook's pipeline, and the store step of a release.

The group commit judges each transaction's messages by their environment's plan in that
transaction, just before storing them (`check`): what the plan lets through is stored (an
event without the properties at fault, when the plan says so), what it holds whole is kept in
quarantine instead, and the original of either is quarantined in the same transaction, so a
message is never stored without its quarantined original, nor the reverse. The plan judges the
message as it reaches this step: after the environment's mapping, when it has one. So the
quarantine keeps that message, and a release stores it as it is (`store_released`), judged
and mapped no more: mapping it again could map it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from integration.environments.identity import IdentityRules
from integration.errors import BadRequest
from integration.inbound import ingest, ledger, repository
from integration.inbound.digests import InstallKey
from integration.plans.check import Plan, bag_of
from integration.plans.gate import judge
from integration.spec import DELETE, Message, MessageError, parse
from integration.store.models import Environment, Quarantined


@dataclass(slots=True)
class Held:
    """What the plan held back, whole, of one request's messages."""

    quarantined: list[str] = field(default_factory=list)  # kept in quarantine now
    again: list[str] = field(default_factory=list)  # quarantined before: redeliveries


@dataclass(frozen=True, slots=True)
class Request:
    """One request's messages, and the plan of its environment (None: it has none)."""

    env_id: uuid.UUID
    plan: Plan | None
    messages: list[Message]


async def check(
    pg: asyncpg.Connection, requests: Sequence[Request], key: InstallKey
) -> list[tuple[list[Message], Held]]:
    """Per request: the messages to store, and what was held. One judgement per environment
    (environments in a fixed order, as the group commit writes them), in the caller's
    transaction; a request whose environment has no plan passes as it is, at no cost. A
    message whose person was erased is not judged: kept in quarantine again, it would bring
    them back; the store takes its redelivery for the duplicate it is."""
    out: list[tuple[list[Message], Held]] = [(r.messages, Held()) for r in requests]
    by_env: dict[uuid.UUID, list[int]] = {}
    for i, r in enumerate(requests):
        if r.plan is not None:
            by_env.setdefault(r.env_id, []).append(i)
    for env_id in sorted(by_env):
        chosen = by_env[env_id]
        given_ids = [m.message_id for i in chosen for m in requests[i].messages]
        gone = await repository.erased(pg, env_id, given_ids, key)
        judged = [
            m
            for i in chosen
            for m in requests[i].messages
            if m.type != DELETE and m.message_id not in gone
        ]
        given = [as_judged(m) for m in judged]
        found = await judge(pg, requests[chosen[0]].plan, env_id, given)
        verdicts = {id(m): (g, v) for m, g, v in zip(judged, given, found.verdicts, strict=True)}
        claimed: set[str] = set()
        for i in chosen:
            kept: list[Message] = []
            held = Held()
            for m in requests[i].messages:
                if id(m) not in verdicts:
                    kept.append(m)  # a delete, or an erased message: no plan judges it
                    continue
                as_given, verdict = verdicts[id(m)]
                if verdict.message is as_given:
                    kept.append(m)
                elif verdict.message is not None:
                    kept.append(_without(m, verdict.message))
                elif m.message_id in found.quarantined and m.message_id not in claimed:
                    claimed.add(m.message_id)
                    held.quarantined.append(m.message_id)
                else:
                    held.again.append(m.message_id)
            out[i] = (kept, held)
    return out


def as_judged(m: Message) -> dict[str, Any]:
    """The message as JSON for the plan and the quarantine: as it came, with the messageId it
    is stored by (one derived from its content when it came without)."""
    raw = m.raw if m.raw is not None else {"type": m.type}
    if raw.get("messageId") == m.message_id:
        return raw
    return {**raw, "messageId": m.message_id}


def _without(m: Message, stripped: Mapping[str, Any]) -> Message:
    """The message without the properties (or traits) the plan stripped from its JSON."""
    kept = stripped.get(bag_of(m.type))
    if bag_of(m.type) == "properties":
        return replace(m, properties=kept, raw=dict(stripped))
    return replace(m, traits=kept, raw=dict(stripped))


async def store_released(
    pg: asyncpg.Connection, env: Environment, rows: Sequence[Quarantined], key: InstallKey
) -> None:
    """Released inbound messages into the store, as the group commit stores them (without the
    plan's step: they were judged on arrival), in the caller's transaction; a message held
    whole moves in the ledger from quarantined to stored, in the minute it was received."""
    now = datetime.now(UTC)
    try:
        parsed = [(r, parse(dict(r.message), now=now, keep_bad_times=True)) for r in rows]
    except MessageError as exc:
        raise BadRequest(
            f"a quarantined message is not valid: {exc.detail}", error=exc.error
        ) from None
    rules = IdentityRules.of(
        env.blocked_ids, env.max_anonymous_ids_per_user, env.allow_identified_merges
    )
    stored = await ingest.store(
        pg, env.id, env.company_property, [m for _, m in parsed], key, rules
    )
    moved = [(r.received_at, m.message_id in stored.new) for r, m in parsed if r.held]
    await ledger.record_releases(pg, env.id, moved)
