"""The data model. Every table but `environments` is keyed by `environment_id` first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DELIVERY_STATUSES = ("pending", "delivered", "dead")
# An event row is a message Segment sent us (inbound) or, for environments that keep them, a
# copy of one the product published for Segment (outbound).
INBOUND = "inbound"
OUTBOUND = "outbound"
EVENT_DIRECTIONS = (INBOUND, OUTBOUND)
# A mapping applies to messages Segment sends us (inbound) or that we send Segment (outbound).
MAPPING_DIRECTIONS = EVENT_DIRECTIONS
US_SEGMENT_API = "https://api.segment.io"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
    }


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


def environment_fk(*, primary_key: bool = False) -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("environments.id", ondelete="CASCADE"), primary_key=primary_key)


def row_id() -> Mapped[int]:
    """The row's own id, second in a primary key led by environment_id: a distributed Postgres
    (Citus) shards every environment-keyed table by environment_id, and requires its keys to
    contain it."""
    return mapped_column(BigInteger, Identity(), primary_key=True)


class Environment(TimestampMixin, Base):
    __tablename__ = "environments"
    __table_args__ = (
        # A CORS preflight names no key, only its origin: it is answered by whether any
        # environment allows that origin, one indexed lookup.
        Index(
            "ix_environments_cors_allowed_origins",
            "cors_allowed_origins",
            postgresql_using="gin",
        ),
    )
    # Server-set columns (updated_at) come back with the flush instead of expiring.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_key_hint: Mapped[str] = mapped_column(String(8))
    webhook_signing_secret: Mapped[str | None] = mapped_column(Text)  # encrypted
    segment_write_key: Mapped[str | None] = mapped_column(Text)  # encrypted
    stream_enabled: Mapped[bool] = mapped_column(server_default=text("false"))
    company_property: Mapped[str] = mapped_column(String(255), server_default="company_id")
    segment_api_url: Mapped[str] = mapped_column(String(2048), server_default=US_SEGMENT_API)
    # The key Segment's libraries and tools publish to our /v1 intake with (distinct from the
    # Segment write key above, which we deliver with). Stored hashed like the webhook key;
    # null for an environment made before the intake existed, until one is generated.
    source_write_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    source_write_key_hint: Mapped[str | None] = mapped_column(String(8))
    # Also keep a copy of every outbound message in `events`, so the admin sees what was sent.
    store_outbound_events: Mapped[bool] = mapped_column(server_default=text("false"))
    # Browser origins (scheme://host[:port]) allowed to call the intake (CORS).
    cors_allowed_origins: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    # Events older than this many days are expired by the worker; None keeps them forever.
    retention_days: Mapped[int | None]
    # Identity rules (integration/inbound/identity.py). Ids that never identify or merge
    # anyone; None: the default placeholders ("0", "undefined", ...).
    blocked_ids: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # A user gets no new anonymous-id links past this many.
    max_anonymous_ids_per_user: Mapped[int] = mapped_column(server_default=text("100"))
    # An alias of one identified user into another is applied (else recorded as a conflict).
    allow_identified_merges: Mapped[bool] = mapped_column(server_default=text("false"))


KEY_KINDS = ("webhook", "source_write")


class PreviousKey(Base):
    """A webhook key or source write key replaced by a rotation, working until `expires_at`:
    the time promised when it was replaced. Every rotation adds one; none replaces another, so
    each key keeps its own promise however many rotations follow. Looked up by digest across
    environments like the current keys (a reference table under Citus, as `environments` is);
    rows past their time open nothing and are deleted by the next rotation."""

    __tablename__ = "previous_keys"
    __table_args__ = (
        CheckConstraint(f"kind IN {KEY_KINDS!r}", name="kind"),
        Index("ix_previous_keys_environment_id", "environment_id", "kind"),
    )

    # A digest of a 256-bit random key: unique across environments and kinds.
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment_id: Mapped[uuid.UUID] = environment_fk()
    kind: Mapped[str] = mapped_column(String(16))
    key_hint: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProfileMixin(TimestampMixin):
    """What users and companies both are: a profile of merged traits, seen over a time span."""

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    traits: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # Per trait, the message time (epoch seconds) it was last set with: older messages lose.
    trait_times: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    first_seen_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]


class User(ProfileMixin, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("environment_id", "user_id"),)

    user_id: Mapped[str] = mapped_column(Text)


class AnonymousId(TimestampMixin, Base):
    __tablename__ = "anonymous_ids"

    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    anonymous_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_anonymous_ids_env_user", "environment_id", "user_id"),)


class Company(ProfileMixin, Base):
    __tablename__ = "companies"
    __table_args__ = (UniqueConstraint("environment_id", "group_id"),)

    group_id: Mapped[str] = mapped_column(Text)


class Membership(Base):
    __tablename__ = "memberships"

    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    group_id: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_memberships_env_group", "environment_id", "group_id"),)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # A message Segment sends back to us (the product's own source, through the Webhooks
        # destination) is deduplicated apart from the outbound copy of the same messageId.
        UniqueConstraint("environment_id", "message_id", "direction"),
        CheckConstraint(f"direction IN {EVENT_DIRECTIONS!r}", name="direction"),
        Index("ix_events_env_timestamp", "environment_id", "timestamp", "id"),
        Index("ix_events_env_user", "environment_id", "user_id", "timestamp"),
        Index(
            "ix_events_env_anonymous",
            "environment_id",
            "anonymous_id",
            postgresql_where=text("anonymous_id IS NOT NULL"),
        ),
        Index(
            "ix_events_env_group",
            "environment_id",
            "group_id",
            postgresql_where=text("group_id IS NOT NULL"),
        ),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    anonymous_id: Mapped[str | None] = mapped_column(Text)
    group_id: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any] | None]
    traits: Mapped[dict[str, Any] | None]
    context: Mapped[dict[str, Any] | None]
    # Fields outside the spec's typed ones (and whole messages of unknown types), kept verbatim.
    extra: Mapped[dict[str, Any] | None]
    timestamp: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    direction: Mapped[str] = mapped_column(String(8), server_default="inbound")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # How often Segment sent this message again after it was stored (the trace shows it).
    redeliveries: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_redelivered_at: Mapped[datetime | None]
    # Why the environment's mapping failed on this message, stored unmapped (migration 0014).
    mapping_error: Mapped[str | None] = mapped_column(Text)
    # The message named no userId (or a blocked one): the user it is stored under, if any, came
    # from a link of its anonymousId, and goes back with an unmerge of that link (migration 0019).
    anonymous_only: Mapped[bool] = mapped_column(server_default=text("false"))


class OutboxMessage(TimestampMixin, Base):
    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("environment_id", "message_id"),
        CheckConstraint(f"status IN {DELIVERY_STATUSES!r}", name="status"),
        Index(
            "ix_outbox_due",
            "environment_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_env_status_id", "environment_id", "status", "id"),
        # Erasure finds a person's outbound messages by the ids inside the payload.
        Index(
            "ix_outbox_env_user",
            "environment_id",
            text("(payload ->> 'userId')"),
            postgresql_where=text("payload ? 'userId'"),
        ),
        Index(
            "ix_outbox_env_anonymous",
            "environment_id",
            text("(payload ->> 'anonymousId')"),
            postgresql_where=text("payload ? 'anonymousId'"),
        ),
        # Retention purges delivered rows oldest first.
        Index(
            "ix_outbox_delivered_at", "delivered_at", postgresql_where=text("status = 'delivered'")
        ),
        # One environment's deliveries by time: the console's counts, chart and last batches.
        Index(
            "ix_outbox_env_delivered",
            "environment_id",
            "delivered_at",
            postgresql_where=text("status = 'delivered'"),
        ),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    # A replay restarts the retry window without losing when the event was first published.
    replayed_at: Mapped[datetime | None]
    # The person the message is about (its userId, else its anonymousId), set at enqueue:
    # delivery keeps each person's messages in publish order across retries.
    identity_key: Mapped[str | None] = mapped_column(Text)
    # Why the environment's mapping failed on this message, sent unmapped (migration 0014).
    mapping_error: Mapped[str | None] = mapped_column(Text)


API_KEY_SCOPES = ("publish", "read")


class ApiKey(Base):
    """A credential of one environment for the admin API, limited to its scopes: `publish`
    (product events) and `read` (users, companies, events, stats, deliveries). Only the
    SHA-256 of the key is kept, looked up like a webhook key's; it is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("environment_id", "name"),
        CheckConstraint(
            f"cardinality(scopes) > 0 AND scopes <@ ARRAY{list(API_KEY_SCOPES)!r}::varchar[]",
            name="scopes",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    environment_id: Mapped[uuid.UUID] = environment_fk()
    name: Mapped[str] = mapped_column(String(64))
    # A digest of a 256-bit random key: unique across environments, as webhook keys are.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(8))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


DELETION_REQUESTERS = ("segment", "admin")


class Deletion(Base):
    """The audit trail of an erased person: a digest of the userId, never the id itself."""

    __tablename__ = "deletions"
    __table_args__ = (
        UniqueConstraint("environment_id", "message_id"),
        CheckConstraint(f"requested_by IN {DELETION_REQUESTERS!r}", name="requested_by"),
        Index("ix_deletions_env_id", "environment_id", "id"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    user_id_hash: Mapped[str] = mapped_column(String(64))
    # The messageId of Segment's delete call, so a redelivered delete is recorded once.
    message_id: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(16))
    removed: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ErasedMessage(Base):
    """A message an erasure removed (or a `delete` carried out), remembered only by a keyed
    digest of its messageId (integration/inbound/digests.py), so that a redelivered copy is
    recognised as a duplicate and changes nothing."""

    __tablename__ = "erased_messages"

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


IDENTITY_KINDS = ("link", "merge")


class IdentityLog(Base):
    """Every anonymous-id link and alias merge made: the message that caused it, what moved,
    and the rule that allowed it (integration/inbound/identity.py)."""

    __tablename__ = "identity_log"
    __table_args__ = (
        CheckConstraint(f"kind IN {IDENTITY_KINDS!r}", name="kind"),
        Index("ix_identity_log_env_user", "environment_id", "user_id"),
        Index("ix_identity_log_env_from", "environment_id", "from_id"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    kind: Mapped[str] = mapped_column(String(16))
    from_id: Mapped[str] = mapped_column(Text)  # the anonymousId linked, or the previousId merged
    user_id: Mapped[str] = mapped_column(Text)  # who it now resolves to
    message_id: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(String(64))
    events_moved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    traits_moved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    memberships_moved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    at: Mapped[datetime]  # the message's timestamp
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # A merge's changes that are no row of their own (inbound/unmerge.py reads them back); none
    # on a link, or on a merge logged before unmerge existed (migration 0019).
    undo: Mapped[dict[str, Any] | None]
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[str | None] = mapped_column(Text)


class IdentityMove(Base):
    """One row a merge moved: an event (with the user it had before), or an anonymous id of the
    merged user. Goes with its merge-log row."""

    __tablename__ = "identity_moves"
    __table_args__ = (
        CheckConstraint("(event_id IS NULL) <> (anonymous_id IS NULL)", name="one_row"),
        ForeignKeyConstraint(
            ["environment_id", "log_id"],
            ["identity_log.environment_id", "identity_log.id"],
            ondelete="CASCADE",
        ),
        Index("ix_identity_moves_env_log", "environment_id", "log_id"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    log_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    anonymous_id: Mapped[str | None] = mapped_column(Text)
    prior_user_id: Mapped[str | None] = mapped_column(Text)


CONFLICT_KINDS = ("linked_elsewhere", "identified_merge", "anonymous_id_limit")
# open until an operator applies or dismisses it (integration/inbound/conflicts.py).
CONFLICT_STATES = ("open", "applied", "dismissed")


class IdentityConflict(Base):
    """A link or merge a message asked for and that was not applied, and why: an anonymousId
    already linked to another user, an alias of one identified user into another, a user at
    its limit of anonymous ids."""

    __tablename__ = "identity_conflicts"
    __table_args__ = (
        CheckConstraint(f"kind IN {CONFLICT_KINDS!r}", name="kind"),
        CheckConstraint(f"state IN {CONFLICT_STATES!r}", name="state"),
        Index("ix_identity_conflicts_env_user", "environment_id", "user_id"),
        Index("ix_identity_conflicts_env_from", "environment_id", "from_id"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    kind: Mapped[str] = mapped_column(String(32))
    from_id: Mapped[str] = mapped_column(Text)  # the anonymousId or previousId
    user_id: Mapped[str] = mapped_column(Text)  # the user the message named
    # linked_elsewhere: the user the anonymousId stays linked to.
    existing_user_id: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    state: Mapped[str] = mapped_column(String(16), server_default=text("'open'"))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)


class ErasureCount(Base):
    """Segment deletes that found nothing to erase: counted, not each audited."""

    __tablename__ = "erasure_counts"

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    unmatched: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_unmatched_at: Mapped[datetime | None]


class OutboxBreaker(Base):
    """An environment's delivery breaker (integration/outbound/breaker.py): since when every
    round to its Segment has failed, and whether delivery paused itself for that. No row, or a
    row with neither set: delivering normally."""

    __tablename__ = "outbox_breakers"

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    failing_since: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    probe_at: Mapped[datetime | None]  # while paused: when one held row is next sent alone
    last_error: Mapped[str | None] = mapped_column(Text)
    resumed_at: Mapped[datetime | None]
    resumed_by: Mapped[str | None] = mapped_column(Text)  # "probe", or the operator's action


class SystemState(Base):
    """Facts about the installation itself (not of an environment), such as the SECRET_KEY
    canary."""

    __tablename__ = "system_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ActivityCount(Base):
    """Events stored and deliveries made, per environment and minute (days, once old), kept
    by triggers on `events` and `outbox` (migration 0006), summed over `slot`: concurrent
    writers add to different stripes so that none waits on another's counter row."""

    __tablename__ = "activity_counts"

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    inbound: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_inbound_at: Mapped[datetime | None]
    last_delivered_at: Mapped[datetime | None]
    # The ledger (migration 0009): what the webhook received and did with it, written by the
    # group commit in the transaction that stores the messages (received = stored + duplicates
    # + refused_*), and outbox rows accepted for Segment, kept by a trigger on `outbox`.
    received: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    stored: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    duplicates: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    refused_signature: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    refused_invalid: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    refused_too_large: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Of `stored`: messages whose userId was a blocked value, stored as anonymous.
    blocked_ids: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    accepted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Messages stored or accepted unmapped because their mapping failed (migration 0014): not
    # part of the ledger's sums, since each is also counted as stored or accepted.
    mapping_failed_inbound: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    mapping_failed_outbound: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Inbound messages held whole by the tracking plan (migration 0016): received = stored +
    # duplicates + refused_* + quarantined; a release moves one to stored in its minute.
    quarantined: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


ATTEMPT_OUTCOMES = ("delivered", "retry", "dead", "replayed")


class DeliveryAttempt(Base):
    """One attempt at delivering an outbox row, with Segment's status (or a replay of it): the
    trace of an outbound message. Goes with its row (erasure, retention) by the foreign key."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["environment_id", "outbox_id"],
            ["outbox.environment_id", "outbox.id"],
            ondelete="CASCADE",
        ),
        Index("ix_delivery_attempts_env_outbox", "environment_id", "outbox_id", "id"),
    )

    environment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[int] = row_id()
    outbox_id: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # When Segment answered (not when the round's transaction began).
    attempted_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))


class Replay(Base):
    """Who replayed which deliveries (the filter), when, and how many rows it queued."""

    __tablename__ = "replays"

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    actor: Mapped[str] = mapped_column(Text)
    filter: Mapped[dict[str, Any]]
    queued: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MappingVersion(Base):
    """One version of an environment's mapping for one direction (integration/mapping): its
    trigger and mapping, as given. Every change adds a version; the highest is the current one."""

    __tablename__ = "mappings"
    __table_args__ = (
        CheckConstraint(f"direction IN {MAPPING_DIRECTIONS!r}", name="direction"),
        CheckConstraint("version > 0", name="version"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str | None] = mapped_column(Text)  # None: every message
    mapping: Mapped[dict[str, Any]]
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


PLAN_DIRECTIONS = ("inbound", "outbound")
UNPLANNED_EVENT = ("allow", "quarantine")
UNPLANNED_PROPERTY = ("keep", "quarantine")


class TrackingPlan(Base):
    """One version of an environment's tracking plan for a direction (integration/plans/):
    every change adds a version, none is edited, so the one in force is the highest."""

    __tablename__ = "tracking_plans"
    __table_args__ = (
        UniqueConstraint("environment_id", "direction", "version"),
        CheckConstraint(f"direction IN {PLAN_DIRECTIONS!r}", name="direction"),
        CheckConstraint(f"unplanned_event IN {UNPLANNED_EVENT!r}", name="unplanned_event"),
        CheckConstraint(f"unplanned_property IN {UNPLANNED_PROPERTY!r}", name="unplanned_property"),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    direction: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    plan: Mapped[dict[str, Any]]
    unplanned_event: Mapped[str] = mapped_column(String(16))
    unplanned_property: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


QUARANTINE_STATES = ("quarantined", "released", "discarded")


class Quarantined(Base):
    """A message a tracking plan did not fit, kept whole as it arrived with its violations.
    `held`: neither stored nor sent until released; else it was stored (inbound) without the
    properties at fault, which releasing restores. Released and discarded rows stay, without
    being listed by default, as the record of what became of them."""

    __tablename__ = "quarantine"
    __table_args__ = (
        CheckConstraint(f"direction IN {PLAN_DIRECTIONS!r}", name="direction"),
        CheckConstraint(f"state IN {QUARANTINE_STATES!r}", name="state"),
        # A message is quarantined once: Segment's redelivery of one held, released or
        # discarded changes nothing (integration/plans/quarantine.py, KEEP).
        UniqueConstraint("environment_id", "direction", "message_id"),
        Index("ix_quarantine_env_state_id", "environment_id", "state", "id"),
        # Erasure finds a person's quarantined messages by the ids inside them.
        Index(
            "ix_quarantine_env_user",
            "environment_id",
            text("(message ->> 'userId')"),
            postgresql_where=text("message ? 'userId'"),
        ),
    )

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    id: Mapped[int] = row_id()
    direction: Mapped[str] = mapped_column(String(8))
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    event: Mapped[str | None] = mapped_column(Text)  # the event's name, for filters
    message: Mapped[dict[str, Any]]
    violations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    held: Mapped[bool]
    state: Mapped[str] = mapped_column(String(16), server_default="quarantined")
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)


class PlanViolation(Base):
    """How often messages broke one rule of an environment's tracking plan (by event, property
    and rule), with the latest value at fault: what the plan's violations look like, whatever
    became of the messages (kept, stripped or held)."""

    __tablename__ = "plan_violations"
    __table_args__ = (CheckConstraint(f"direction IN {PLAN_DIRECTIONS!r}", name="direction"),)

    environment_id: Mapped[uuid.UUID] = environment_fk(primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    event: Mapped[str] = mapped_column(Text, primary_key=True)
    # '' for the event itself (an unplanned event): a key column cannot be null.
    property: Mapped[str] = mapped_column(Text, primary_key=True)
    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    sample: Mapped[Any] = mapped_column(JSONB, nullable=True)  # null: no value (a missing one)
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
