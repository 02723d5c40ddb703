"""Receiving what Segment's Webhooks destinations send: authenticate, read, verify the
signature, parse, validate, store.

The order is the security boundary. The key is looked up (environments/keys.py, as the /v1
intake's) before a byte of the body is read, so an unknown key costs one indexed lookup; the
signature is checked before any JSON work; only then is the body parsed (off the event loop
when it is large, http/body.py) and validated, and the valid messages are written by the group
commit.
Every wait on the database has one deadline, so Segment (which gives up after 5 s on classic
Webhooks and 10 s on Actions) always gets an answer it can act on: 200 after commit, 503 with
Retry-After for anything transient.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.crypto import SecretBox
from integration.deadline import within
from integration.environments.current_mappings import Current, CurrentMappings, on_connection
from integration.environments.key_cache import KeyCache
from integration.environments.keys import WEBHOOK_KEY, KeyAuthenticator
from integration.environments.repository import KeyMatch
from integration.errors import (
    BadRequest,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from integration.http.body import BodyReader, bad_request, json_of, message_errors, off_loop
from integration.inbound import ledger, live, repository, signature
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import EnvironmentGone, GroupCommit, Target, Written
from integration.metrics import INBOUND_MESSAGES, children
from integration.plans.cache import PlanCache, Unknown
from integration.plans.check import Plan
from integration.spec import (
    DELETE,
    KNOWN_TYPES,
    MAX_BATCH_MESSAGES,
    Message,
    MessageError,
    NoneValid,
    Rejection,
    parse,
    parse_batch,
    require_valid,
)
from integration.store.db import driver_connection
from integration.store.models import INBOUND

BAD_SIGNATURE = "invalid_signature: X-Signature is missing or does not fit the signing secret"
UNSIGNED_DELETE = (
    "a delete in a batch signed over its first event only must be that first event: the"
    " signature does not cover this one, and an unsigned message may not erase anyone"
)
REPLAYED = (
    "the batch's signed first event was received before, so the signature vouches for nothing"
    " new in it; only messages received before are acknowledged"
)


@dataclass(slots=True)
class Validated:
    messages: list[Message] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Where each message stood in the body (parallel to `messages`).
    positions: list[int] = field(default_factory=list)
    # The body's items as they came, by position: what a mapping reads.
    items: list[Any] = field(default_factory=list)
    size: int = 0  # the body's bytes: mapping it is done off the event loop as parsing was

    def refuse(self, drop: set[int], error: str, detail: str) -> list[Message]:
        """Move the messages at these positions to `rejected`; returns them."""
        kept: list[tuple[int, Message]] = []
        dropped: list[Message] = []
        for position, m in zip(self.positions, self.messages, strict=True):
            if position in drop:
                dropped.append(m)
                self.rejected.append(Rejection(position, error, detail, m.message_id))
            else:
                kept.append((position, m))
        self.positions = [p for p, _ in kept]
        self.messages = [m for _, m in kept]
        self.rejected.sort(key=lambda r: r.index)
        return dropped


@dataclass(frozen=True, slots=True)
class Received:
    """The answer to one webhook request, after its messages are committed."""

    validated: Validated
    written: Written

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stored": self.written.stored,
            "duplicates": self.written.duplicates,
            "rejected": [r.as_dict() for r in self.validated.rejected],
        }
        if self.written.deleted is not None:
            out["deleted"] = self.written.deleted
        if self.written.quarantined:
            out["quarantined"] = self.written.quarantined
        return out


def validate(items: list[Any]) -> Validated:
    """Parse each item; keep the valid ones, list the rest with reasons."""
    out = Validated(items=items)
    now = datetime.now(UTC)
    for index, item in enumerate(items):
        try:
            out.messages.append(parse(item, now=now, keep_bad_times=True))
            out.positions.append(index)
        except MessageError as exc:
            out.rejected.append(Rejection.of(index, exc, item))
    return out


def read_batch(body: bytes) -> Validated:
    """The body as messages: one message, an array of them, or the Tracking API's batch
    envelope. Raises for a body that holds no message to judge; see `refusal_of` for one whose
    messages are all invalid."""
    data = json_of(body, empty="body is empty; send a Segment message or an array of them")
    with message_errors():
        items = parse_batch(data)
    if len(items) > MAX_BATCH_MESSAGES:
        raise PayloadTooLarge(
            f"the batch holds {len(items)} messages; at most {MAX_BATCH_MESSAGES} are accepted"
            " per request (Segment's own maximum)",
            error="too_many_messages",
        )
    validated = validate(items)
    validated.size = len(body)
    if validated.rejected:
        _inbound_messages("invalid", "rejected").inc(len(validated.rejected))
    return validated


def refusal_of(none: NoneValid) -> BadRequest:
    """The webhook's answer when no message is valid: our error shape, with every refused
    message listed (and its messageId) when there were several."""
    listed: dict[str, Any] = (
        {"rejected": [r.as_dict() for r in none.rejected]} if none.several else {}
    )
    return bad_request(none, **listed)


class Inbound:
    """The webhook's service, made once per process in the app's lifespan."""

    def __init__(
        self,
        engine: AsyncEngine,
        box: SecretBox,
        commit: GroupCommit,
        settings: Settings,
        live_log: live.LiveLog | None = None,
        keys: KeyCache[KeyMatch] | None = None,
        mappings: CurrentMappings | None = None,
        plans: PlanCache | None = None,
    ) -> None:
        self._engine = engine
        self._mappings = mappings or CurrentMappings()
        self._plans = plans or PlanCache(engine)
        self._keys = KeyAuthenticator(engine, WEBHOOK_KEY, settings.auth_failures_per_minute, keys)
        self.live = live_log or live.LiveLog()
        self._box = box
        self._commit = commit
        self._deadline = settings.webhook_deadline_seconds
        self._key = InstallKey.of(settings)

    async def receive(
        self,
        key: str,
        *,
        client: str,
        given_signature: str | None,
        read_body: BodyReader,
    ) -> Received:
        deadline = asyncio.get_running_loop().time() + self._deadline
        env = await self._authenticate(key, client, deadline)
        target = Target(env.id, env.company_property, env.identity)
        try:
            validated = await self._admit(env, target, read_body, given_signature, deadline)
        except (BadRequest, PayloadTooLarge, Unauthorized) as exc:
            # Refused whole: counted (as one) before the refusal is answered.
            await self._count_refused(target, {ledger.reason_of(exc.error): 1}, deadline)
            raise
        refusals = _refusals(validated)
        try:
            require_valid(len(validated.messages), validated.rejected)
        except NoneValid as none:
            await self._count_refused(target, refusals, deadline)
            raise refusal_of(none) from None
        # The inbound direction's step between validating and storing: the environment's
        # mapping; then the tracking plan, which judges the messages in the transaction that
        # stores them (group_commit.py, inbound/planned.py).
        await self._map(target, validated, deadline)
        target = replace(target, plan=await self._plan(target, deadline))
        written = await self._store(target, validated, refusals, deadline)
        _count_accepted(validated.messages)
        self._note_duplicates(target, validated, written)
        self._note_held(target, validated, written)
        # At once here; every process (this one again) when the notification arrives.
        self.live.forget(target.id, written.erased_ids)
        return Received(validated, written)

    async def _admit(
        self,
        env: KeyMatch,
        target: Target,
        read_body: BodyReader,
        given_signature: str | None,
        deadline: float,
    ) -> Validated:
        """The body read, its signature checked, its messages validated: the valid ones, and
        the refused ones with reasons (all of them, possibly)."""
        body = await read_body()
        secret = (
            self._box.decrypt(env.webhook_signing_secret) if env.webhook_signing_secret else None
        )
        signed = signature.check(secret, body, given_signature) if secret else None
        if secret and signed is None:
            self.live.add(env.id, [live.seen(None, live.REJECTED, BAD_SIGNATURE)])
            raise Unauthorized(
                "X-Signature is missing or is not the HMAC-SHA1, with this environment's signing"
                " secret, of the body or of the first event of a batch",
                error="invalid_signature",
            )
        validated = await self._read(target, body)
        if signed is signature.Signed.FIRST and validated.messages:
            await self._vouch(target, validated, deadline)
        return validated

    async def _count_refused(
        self, target: Target, refused: dict[str, int], deadline: float
    ) -> None:
        await self._store(target, Validated(), refused, deadline)

    async def _authenticate(self, key: str, client: str, deadline: float) -> KeyMatch:
        """The webhook key's environment (environments/keys.py); a refusal is in the ledger."""
        try:
            return await self._keys.authenticate(key, client, deadline)
        except (Unauthorized, TooManyRequests):
            ledger.observe_bad_key()
            raise

    async def _read(self, target: Target, body: bytes) -> Validated:
        """The body's messages; what was refused is noted in the live log before any 4xx."""
        try:
            validated = await off_loop(len(body), read_batch, body)
        except (BadRequest, PayloadTooLarge) as exc:
            self.live.add(target.id, [live.seen(None, live.REJECTED, f"{exc.error}: {exc.detail}")])
            raise
        if validated.rejected:
            self.live.add(
                target.id,
                [
                    live.seen(
                        r.item,
                        live.REJECTED,
                        f"{r.error}: {r.detail}",
                        company_property=target.company_property,
                    )
                    for r in validated.rejected
                ],
            )
        return validated

    async def _vouch(self, target: Target, validated: Validated, deadline: float) -> None:
        """A batch signed over its first event only: the signature says nothing of the rest,
        which the key in the URL alone admits. So an unsigned `delete` erases no one, and a
        batch whose signed first event was received before (a captured signature, replayed with
        anything appended) stores nothing new. A true redelivery, every message received
        before, is acknowledged as ever."""
        dropped = validated.refuse(
            {
                p
                for p, m in zip(validated.positions, validated.messages, strict=True)
                if m.type == DELETE and p != 0
            },
            "unsigned_delete",
            UNSIGNED_DELETE,
        )
        if validated.positions[:1] == [0]:
            first = validated.messages[0].message_id
            if await within(deadline, self._known(target, [first])):
                ids = [m.message_id for m in validated.messages]
                before = await within(deadline, self._known(target, ids))
                dropped += validated.refuse(
                    {
                        p
                        for p, m in zip(validated.positions, validated.messages, strict=True)
                        if m.message_id not in before
                    },
                    "replayed_signature",
                    REPLAYED,
                )
        if dropped:
            _inbound_messages("invalid", "rejected").inc(len(dropped))
            refused = {r.message_id: f"{r.error}: {r.detail}" for r in validated.rejected}
            self.live.add(
                target.id,
                [live.of_message(m, live.REJECTED, refused[m.message_id]) for m in dropped],
            )

    async def _map(self, target: Target, validated: Validated, deadline: float) -> None:
        """Each message as the environment's inbound mapping makes it. One the mapping fails on
        is stored as it came, with the error attached (and counted when stored)."""
        current = await within(deadline, self._current_mapping(target))
        if current is not None:
            await off_loop(validated.size, _map_all, current, validated, datetime.now(UTC))

    async def _current_mapping(self, target: Target) -> Current | None:
        async with driver_connection(self._engine) as pg:
            return await self._mappings.get(target.id, INBOUND, on_connection(pg))

    async def _plan(self, target: Target, deadline: float) -> Plan | None:
        """The environment's inbound tracking plan: remembered, else read under the deadline."""
        found = self._plans.remembered(target.id, "inbound")
        if isinstance(found, Unknown):
            return await within(deadline, self._plans.plan(target.id, "inbound"))
        return found

    async def _known(self, target: Target, message_ids: list[str]) -> set[str]:
        async with driver_connection(self._engine) as pg:
            return await repository.known(pg, target.id, message_ids, self._key)

    def _note_duplicates(self, target: Target, validated: Validated, written: Written) -> None:
        if not written.duplicate_ids:
            return
        again = set(written.duplicate_ids)
        self.live.add(
            target.id,
            [
                live.of_message(m, live.DUPLICATE, "already stored: same messageId")
                for m in validated.messages
                if m.message_id in again
            ],
        )

    def _note_held(self, target: Target, validated: Validated, written: Written) -> None:
        if not written.quarantined_ids:
            return
        held = set(written.quarantined_ids)
        self.live.add(
            target.id,
            [
                live.of_message(m, live.QUARANTINED, "held whole by the tracking plan")
                for m in validated.messages
                if m.message_id in held
            ],
        )

    async def _store(
        self, target: Target, validated: Validated, refused: dict[str, int], deadline: float
    ) -> Written:
        try:
            return await within(deadline, self._commit.submit(target, validated.messages, refused))
        except EnvironmentGone:
            raise self._keys.unknown() from None


_inbound_messages = children(INBOUND_MESSAGES)


def _map_all(current: Current, validated: Validated, now: datetime) -> None:
    pairs = zip(validated.positions, validated.messages, strict=True)
    for i, (position, m) in enumerate(pairs):
        mapped = current.apply(validated.items[position], now=now)
        if mapped.error is not None:
            validated.messages[i] = replace(m, mapping_error=mapped.error)
        elif mapped.parsed is not None:
            # Its own messageId: one derived from the content must not change with mapping.
            validated.messages[i] = replace(mapped.parsed, message_id=m.message_id)


def _refusals(validated: Validated) -> dict[str, int]:
    """The messages refused in a body that was read, by the ledger's reason."""
    out: dict[str, int] = {}
    for r in validated.rejected:
        reason = ledger.reason_of(r.error)
        out[reason] = out.get(reason, 0) + 1
    return out


def _count_accepted(messages: list[Message]) -> None:
    for m in messages:
        # Unknown types are stored, but a caller must not be able to mint metric labels.
        kind = m.type if m.type in KNOWN_TYPES or m.type == DELETE else "other"
        _inbound_messages(kind, "accepted").inc()
