"""Request and response bodies of the admin API. The OpenAPI document is generated from these,
and every response is built through them, so the document and the answers cannot drift."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from integration.http.openapi import RejectionBody
from integration.http.pagination import MAX_ROW_ID
from integration.inbound import queries
from integration.store.models import OutboxMessage

Json = dict[str, Any]


class ConnectionTest(BaseModel):
    ok: bool
    summary: str
    status: int | None
    response: str


class DeadLetter(BaseModel):
    messageId: str
    detail: str


class PublishAnswer(BaseModel):
    accepted: int
    stream_enabled: bool
    queued: int
    message_ids: list[str]
    duplicates: int
    dead: list[DeadLetter]
    rejected: list[RejectionBody]
    quarantined: int | None = Field(
        None, description="held whole by the outbound tracking plan: sent once released"
    )


class Delivery(BaseModel):
    @classmethod
    def of(cls, row: OutboxMessage) -> Delivery:
        return cls(
            id=row.id,
            message_id=row.message_id,
            type=row.type,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            last_error=row.last_error,
            mapping_error=row.mapping_error,
            response_status=row.response_status,
            response_body=row.response_body,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            payload=row.payload,
        )

    id: int
    message_id: str
    type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    mapping_error: str | None = Field(
        description="why the environment's mapping failed on it: it was sent unmapped"
    )
    response_status: int | None
    response_body: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: Json


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


NoNul = Annotated[str, Field(pattern=r"^[^\x00]*$", max_length=2048)]


class ReplayRequest(BaseModel):
    """A filter on the outbox: with nothing set, every dead delivery (up to the bound). A
    misspelt filter is refused, so that it can never widen a replay to all of them."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    ids: list[Annotated[int, Field(gt=0, le=MAX_ROW_ID)]] | None = Field(
        None, description="delivery ids; default: every one the filter matches"
    )
    message_ids: list[Annotated[str, Field(pattern=r"^[^\x00]*$")]] | None = None
    status: Literal["dead", "delivered"] = Field(
        "dead", description="dead (send again) or delivered (re-send: Segment dedupes by messageId)"
    )
    from_: NoNul | None = Field(None, alias="from", description="accepted at or after (ISO-8601)")
    to: NoNul | None = Field(None, description="accepted before (ISO-8601)")
    event: NoNul | None = Field(None, description="the track event's name")
    type: NoNul | None = Field(None, description="identify, track, page, screen, group, alias")
    user_id: NoNul | None = Field(None, description="the message's userId")
    dry_run: bool = Field(
        False, description="count and sample what would be queued; change nothing"
    )


class ReplaySample(BaseModel):
    id: int
    message_id: str
    type: str
    event: str | None
    user_id: str | None
    created_at: datetime
    response_status: int | None


class Replayed(BaseModel):
    replayed: int = Field(description="rows queued by this call (0 in a dry run)")
    queued: int = Field(description="rows queued, or that a real replay would queue")
    matched: int = Field(description="rows the filter matches now, counted up to limit + 1")
    dry_run: bool
    limit: int = Field(description="the most rows one call queues")
    more: bool = Field(description="more rows match than one call queues: call again")
    sample: list[ReplaySample]


class ReplayRecord(BaseModel):
    """One replay as recorded: who asked, the filter it ran with, what it queued."""

    id: int
    actor: str
    filter: Json
    queued: int
    matched: int
    created_at: datetime


class ReplayRecordPage(BaseModel):
    items: list[ReplayRecord]
    next_cursor: str | None


class UserOut(BaseModel):
    user_id: str
    traits: Json
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class CompanyOut(BaseModel):
    group_id: str
    traits: Json
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CompanyPage(BaseModel):
    items: list[CompanyOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int
    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    properties: Json | None
    traits: Json | None
    context: Json | None
    extra: Json | None
    timestamp: datetime
    sent_at: datetime | None
    received_at: datetime | None
    direction: str = Field(description="inbound, or outbound for a copy of a published message")
    created_at: datetime
    mapping_error: str | None = Field(
        None, description="why the environment's mapping failed on it: it was kept unmapped"
    )


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class UserDetail(UserOut):
    @classmethod
    def of(cls, found: queries.FoundUser) -> UserDetail:
        return cls(
            **UserOut.model_validate(found.user, from_attributes=True).model_dump(),
            anonymous_ids=found.anonymous_ids,
            anonymous_ids_total=found.anonymous_id_count,
            companies=[CompanyOut.model_validate(c, from_attributes=True) for c in found.companies],
            recent_events=[
                EventOut.model_validate(e, from_attributes=True) for e in found.recent_events
            ],
        )

    anonymous_ids: list[str] = Field(description="the first 1,000, in order")
    anonymous_ids_total: int = Field(description="how many anonymous ids resolve to this user")
    companies: list[CompanyOut]
    recent_events: list[EventOut]


class IdentityLogOut(BaseModel):
    kind: Literal["link", "merge"] = Field(
        description="link: an anonymousId tied to the user; merge: an alias's previousId folded"
        " into the user"
    )
    from_id: str = Field(description="the anonymousId linked, or the previousId merged")
    user_id: str = Field(description="the user it now resolves to")
    message_id: str = Field(description="the message that caused it")
    at: datetime = Field(description="the message's timestamp")
    rule: str = Field(
        description="what allowed it: first_link, previous_id_anonymous, user_new,"
        " identified_merges_allowed, operator (a conflict applied over the admin API)"
    )
    events_moved: int
    traits_moved: int
    memberships_moved: int
    created_at: datetime
    id: int = Field(description="the merge-log row")
    undone_at: datetime | None = Field(
        None, description="when an operator unmerged it (POST /users/{user_id}/unmerge)"
    )
    undone_by: str | None = None


class UnmergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Also under the names the merge log and Segment's alias give it.
    merged_id: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^[^\x00]*$")] = Field(
        validation_alias=AliasChoices("merged_id", "from_id", "previous_id", "previousId"),
        description="the id merged into this user (the alias's previousId; also accepted as"
        " from_id, previous_id or previousId)",
    )


class UnmergeOut(BaseModel):
    user_id: str
    merged_id: str
    merge_id: int = Field(description="the merge-log row taken back")
    undone_at: datetime
    already_undone: bool = Field(
        description="true when this merge was undone before: nothing changed now"
    )
    restored: dict[str, int] = Field(
        description="what went back to the merged id: events, anonymous_ids, traits (of its"
        " profile as it was), memberships"
    )


class IdentityConflictOut(BaseModel):
    kind: Literal["linked_elsewhere", "identified_merge", "anonymous_id_limit"] = Field(
        description="linked_elsewhere: the anonymousId or previousId stays with"
        " existing_user_id; identified_merge: an alias of one identified user into another;"
        " anonymous_id_limit: the user holds max_anonymous_ids_per_user already"
    )
    from_id: str = Field(description="the anonymousId or previousId")
    user_id: str = Field(description="the user the message named")
    existing_user_id: str | None
    message_id: str
    at: datetime
    created_at: datetime
    id: int = Field(description="for apply and dismiss: /identity-conflicts/{id}/apply")
    state: Literal["open", "applied", "dismissed"] = Field(
        description="open until an operator applies it (the link or merge is made, logged"
        " with rule operator) or dismisses it (nothing changes)"
    )
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="who applied or dismissed it")


class IdentityConflictPage(BaseModel):
    items: list[IdentityConflictOut]
    next_cursor: str | None


class IdentityOut(BaseModel):
    @classmethod
    def of(cls, found: queries.FoundIdentity) -> IdentityOut:
        return cls(
            user_id=found.user_id,
            anonymous_ids=found.anonymous_ids,
            anonymous_ids_total=found.anonymous_id_count,
            merges_in=[
                IdentityLogOut.model_validate(r, from_attributes=True) for r in found.merges_in
            ],
            merges_out=[
                IdentityLogOut.model_validate(r, from_attributes=True) for r in found.merges_out
            ],
            conflicts=[
                IdentityConflictOut.model_validate(r, from_attributes=True) for r in found.conflicts
            ],
        )

    user_id: str
    anonymous_ids: list[str] = Field(
        description="the ids that resolve to this user: the first 1,000, in order"
    )
    anonymous_ids_total: int = Field(description="how many ids resolve to this user")
    merges_in: list[IdentityLogOut] = Field(
        description="links and merges into this user, newest first (at most 200)"
    )
    merges_out: list[IdentityLogOut] = Field(
        description="merges of this id into another user, newest first (at most 200)"
    )
    conflicts: list[IdentityConflictOut] = Field(
        description="links and merges refused that name this id, newest first (at most 200)"
    )


class CompanyDetail(CompanyOut):
    member_count: int
    members: list[UserOut] = Field(description="the first 100 members")


class UserDeleted(BaseModel):
    user_id: str
    deleted: dict[str, int] = Field(description="rows deleted per table")


class Stats(BaseModel):
    users: int
    companies: int
    events_total: int
    events_last_hour: int
    events_last_day: int
    outbound_pending: int
    outbound_delivered: int
    outbound_dead: int
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None


class DeletionOut(BaseModel):
    id: int
    user_id_hash: str = Field(
        description="HMAC-SHA256 (hex) of the erased userId under a key of this install (derived"
        " from SECRET_KEY); never the id"
    )
    requested_by: str = Field(description="'segment' (a delete call) or 'admin'")
    removed: dict[str, int] = Field(description="rows removed per table")
    created_at: datetime


class UnmatchedDeletes(BaseModel):
    count: int = Field(description="Segment deletes of userIds the environment never held")
    last_at: datetime | None


class DeletionPage(BaseModel):
    items: list[DeletionOut]
    next_cursor: str | None
    unmatched: UnmatchedDeletes = Field(
        description="deletes that found nothing to erase: counted here, not listed one by one"
    )


class InboundLedger(BaseModel):
    received: int
    stored: int
    duplicates: int
    refused: dict[str, int] = Field(description="bad_signature, invalid, too_large")
    blocked_ids: int = Field(
        description="of the stored: stored as anonymous because their userId is a blocked id"
    )
    mapping_failed: int = Field(
        description="of those stored, stored unmapped: their mapping failed (outside the sum)"
    )
    quarantined: int = Field(
        description="held whole by the tracking plan, not released (still held, or discarded)"
    )
    note: str


class OutboundLedger(BaseModel):
    accepted: int
    delivered: int
    pending: int
    held: int = Field(description="pending while the stream is off or its host not allowed")
    dead: dict[str, int] = Field(
        description="by Segment's answer: HTTP status, too_large, no_answer"
    )
    mapping_failed: int = Field(
        description="of those accepted, accepted unmapped: their mapping failed (outside the sum)"
    )
    quarantined: int = Field(
        description="held whole by the tracking plan, not released (still held, or discarded)"
    )


class LedgerOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str | None
    inbound: InboundLedger | None = None
    outbound: OutboundLedger | None = None


class MessageTrace(BaseModel):
    message_id: str
    state: dict[str, str] = Field(
        description="per direction: stored; pending, held, delivered, dead; quarantined,"
        " discarded (by the tracking plan's quarantine)"
    )
    lifecycle: list[Json] = Field(description="oldest first")
