"""How validated messages become rows, in a transaction the caller owns.

Events go in first, deduped on messageId (and on the digests of erased messages' ids); only
messages that were new have side effects (users, companies, anonymous-id links, memberships,
aliases), so a redelivered message changes nothing. Side effects are folded per key before
they reach the database, since one INSERT ... ON CONFLICT cannot touch the same row twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from integration.inbound import repository
from integration.inbound.digests import InstallKey
from integration.spec import EVENT_TYPES, KNOWN_TYPES, Message, company_of
from integration.store.events import event_row
from integration.store.traits import TraitState

# The calls whose `traits` are their user's: an identify's, and an event's (Segment's spec puts
# `traits` on identify and group calls only; on an event, a mapping put them there). A group's
# traits are its company's.
USER_TRAIT_TYPES = ("identify", *EVENT_TYPES)


@dataclass(slots=True)
class _Effects:
    users: dict[str, TraitState] = field(default_factory=dict)
    companies: dict[str, TraitState] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    aliases: list[tuple[str, str]] = field(default_factory=list)

    def add(self, m: Message, company: str | None, stored_user_id: str | None) -> None:
        """`stored_user_id` is the user the event row got: m.user_id, or the user an
        already-linked anonymousId resolved to. A type Segment never sends is kept as an event
        and nothing more: it must not create or change a profile."""
        if m.type not in KNOWN_TYPES:
            return
        if m.user_id:
            user = self.users.setdefault(m.user_id, TraitState())
            user.apply(m.traits if m.type in USER_TRAIT_TYPES else None, m.timestamp)
        if m.user_id and m.anonymous_id:
            self.links.setdefault(m.anonymous_id, m.user_id)
        if company:
            state = self.companies.setdefault(company, TraitState())
            state.apply(m.traits if m.type == "group" else None, m.timestamp)
            member = m.user_id or stored_user_id
            if member:
                self.memberships.add((member, company))
        if m.type == "alias" and m.previous_id and m.user_id:
            self.aliases.append((m.previous_id, m.user_id))


def _unique(messages: list[Message]) -> list[Message]:
    seen: dict[str, Message] = {}
    for m in messages:
        seen.setdefault(m.message_id, m)
    return list(seen.values())


async def store(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    company_property: str,
    messages: list[Message],
    key: InstallKey,
) -> set[str]:
    """Write valid messages; returns the messageIds that were new (the rest were already
    stored, erased, or repeated in `messages`)."""
    unique = _unique(messages)
    companies = {m.message_id: company_of(m, company_property) for m in unique}
    rows = [event_row(m, companies[m.message_id]) for m in unique]
    new_ids = await repository.insert_events(pg, env_id, rows, key)
    effects = _Effects()
    # Oldest first, so that within a batch the newest message's traits win.
    for m in sorted((m for m in unique if m.message_id in new_ids), key=lambda m: m.timestamp):
        effects.add(m, companies[m.message_id], new_ids[m.message_id])
    await _apply(pg, env_id, effects)
    return set(new_ids)


async def _apply(pg: asyncpg.Connection, env_id: uuid.UUID, fx: _Effects) -> None:
    await repository.apply_effects(
        pg,
        env_id,
        users=[s.row("key", k) for k, s in fx.users.items()],
        companies=[s.row("key", k) for k, s in fx.companies.items()],
        links=fx.links,
        memberships=fx.memberships,
    )
    for previous_id, user_id in fx.aliases:
        await repository.merge_alias(pg, env_id, previous_id, user_id)
