"""How validated messages become rows, in a transaction the caller owns.

Events go in first, deduped on messageId (and on the digests of erased messages' ids); only
messages that were new have side effects (users, companies, anonymous-id links, memberships,
aliases), so a redelivered message changes nothing. Side effects are folded per key before
they reach the database, since one INSERT ... ON CONFLICT cannot touch the same row twice.
A userId on the environment's blocked list is dropped before any of this: the message is
stored as anonymous. Links and aliases go through identity.py's rules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

import asyncpg

from integration.environments.identity import DEFAULT_RULES, IdentityRules
from integration.inbound import identity, repository
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
    rules: IdentityRules
    users: dict[str, TraitState] = field(default_factory=dict)
    companies: dict[str, TraitState] = field(default_factory=dict)
    # Each (anonymousId, userId) pair asked for, by its first message.
    links: dict[tuple[str, str], identity.Asked] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    aliases: list[identity.Asked] = field(default_factory=list)

    def add(self, m: Message, company: str | None, stored_user_id: str | None) -> None:
        """`stored_user_id` is the user the event row got: m.user_id, or the user an
        already-linked anonymousId resolved to. A type Segment never sends is kept as an event
        and nothing more: it must not create or change a profile."""
        if m.type not in KNOWN_TYPES:
            return
        if m.user_id:
            user = self.users.setdefault(m.user_id, TraitState())
            user.apply(m.traits if m.type in USER_TRAIT_TYPES else None, m.timestamp)
        # A blocked anonymousId or previousId links and merges no one either.
        if m.user_id and m.anonymous_id and not self.rules.blocks(m.anonymous_id):
            asked = identity.Asked(m.anonymous_id, m.user_id, m.message_id, m.timestamp)
            self.links.setdefault((m.anonymous_id, m.user_id), asked)
        if company:
            state = self.companies.setdefault(company, TraitState())
            state.apply(m.traits if m.type == "group" else None, m.timestamp)
            member = m.user_id or stored_user_id
            if member:
                self.memberships.add((member, company))
        previous = m.previous_id if m.type == "alias" else None
        if previous and m.user_id and not self.rules.blocks(previous):
            self.aliases.append(identity.Asked(previous, m.user_id, m.message_id, m.timestamp))


def _unique(messages: list[Message]) -> list[Message]:
    seen: dict[str, Message] = {}
    for m in messages:
        seen.setdefault(m.message_id, m)
    return list(seen.values())


def _anonymised(m: Message) -> Message:
    """A message whose userId is a blocked value, as an anonymous one: it identifies no one,
    and its userId stays in `extra`, so the stored message still reads as it was sent."""
    return replace(m, user_id=None, extra={**(m.extra or {}), "userId": m.user_id})


@dataclass(frozen=True, slots=True)
class Stored:
    new: set[str]  # the messageIds new to the store
    blocked: set[str]  # of those, the ones stored as anonymous: their userId was blocked


async def store(
    pg: asyncpg.Connection,
    env_id: uuid.UUID,
    company_property: str,
    messages: list[Message],
    key: InstallKey,
    rules: IdentityRules = DEFAULT_RULES,
) -> Stored:
    """Write valid messages; returns the messageIds that were new (the rest were already
    stored, erased, or repeated in `messages`)."""
    unique = _unique(messages)
    blocked = {m.message_id for m in unique if rules.blocks(m.user_id)}
    unique = [_anonymised(m) if m.message_id in blocked else m for m in unique]
    companies = {m.message_id: company_of(m, company_property) for m in unique}
    rows = [event_row(m, companies[m.message_id]) for m in unique]
    # An alias's previousId is the anonymousId of the events it moves.
    anonymous = {i for m in unique for i in (m.anonymous_id, m.previous_id) if i}
    await repository.lock_anonymous_ids(pg, env_id, anonymous)
    new_ids = await repository.insert_events(pg, env_id, rows, key)
    effects = _Effects(rules)
    # Oldest first, so that within a batch the newest message's traits win.
    for m in sorted((m for m in unique if m.message_id in new_ids), key=lambda m: m.timestamp):
        effects.add(m, companies[m.message_id], new_ids[m.message_id])
    await _apply(pg, env_id, effects)
    return Stored(set(new_ids), blocked & set(new_ids))


async def _apply(pg: asyncpg.Connection, env_id: uuid.UUID, fx: _Effects) -> None:
    await repository.apply_effects(
        pg,
        env_id,
        users=[s.row("key", k) for k, s in fx.users.items()],
        companies=[s.row("key", k) for k, s in fx.companies.items()],
        memberships=fx.memberships,
    )
    # After the users' rows are locked by the upsert above (identity.LINK says why).
    await identity.link(pg, env_id, sorted(fx.links.values(), key=_by_id), fx.rules)
    for asked in fx.aliases:
        await identity.merge_alias(pg, env_id, asked, fx.rules)


def _by_id(asked: identity.Asked) -> tuple[str, str]:
    return asked.from_id, asked.user_id
