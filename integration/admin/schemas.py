"""Request and response bodies of the admin API. The OpenAPI document is generated from these,
and every response is built through them, so the document and the answers cannot drift."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from integration.http.openapi import Rejection, optional

Json = dict[str, Any]


class EnvironmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Secrets can be cleared with '' or null; the other settings always hold a value, so null
    # is refused for them and is left out of the document.
    segment_write_key: str | None = Field(
        None, description="HTTP API source write key; '' or null clears"
    )
    stream_enabled: bool | SkipJsonSchema[None] = optional("Stream product events to Segment")
    company_property: str | SkipJsonSchema[None] = optional("Event property naming the company")
    webhook_signing_secret: str | None = Field(
        None, description="Webhook signing secret; '' or null clears"
    )
    segment_api_url: str | SkipJsonSchema[None] = optional("Segment API base URL, or 'us' / 'eu'")


class EnvironmentCreate(EnvironmentSettings):
    name: str = Field(
        description="a-z, 0-9, '-' and '_', up to 64 characters",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        max_length=64,
    )


class EnvironmentOut(BaseModel):
    id: str
    name: str
    webhook_key_hint: str
    stream_enabled: bool
    company_property: str
    segment_api_url: str
    segment_write_key: str | None = Field(description="masked: last 4 characters")
    webhook_signing_secret: str | None = Field(description="masked: last 4 characters")
    created_at: datetime
    updated_at: datetime


class EnvironmentWithKey(EnvironmentOut):
    webhook_key: str = Field(description="shown only on creation and rotation")
    webhook_url: str
    previous_key_valid_until: datetime | None = None


class EnvironmentPage(BaseModel):
    items: list[EnvironmentOut]
    next_cursor: str | None


class ConnectionTest(BaseModel):
    ok: bool
    summary: str
    status: int | None
    response: str


class DeadLetter(BaseModel):
    messageId: str
    detail: str


class Published(BaseModel):
    accepted: int
    stream_enabled: bool
    queued: int
    message_ids: list[str]
    duplicates: int
    dead: list[DeadLetter]
    rejected: list[Rejection]


class Delivery(BaseModel):
    id: int
    message_id: str
    type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    response_status: int | None
    response_body: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: Json


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


MAX_GRACE_SECONDS = 365 * 24 * 3600


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int | SkipJsonSchema[None] = Field(
        None,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key keeps working; 0 revokes it at once. "
        "Default: WEBHOOK_KEY_GRACE_SECONDS",
        json_schema_extra=_no_default,
    )


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(None, description="delivery ids; default: every dead one")
    message_ids: list[str] | None = None


class Replayed(BaseModel):
    replayed: int


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
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class UserDetail(UserOut):
    anonymous_ids: list[str]
    companies: list[CompanyOut]
    recent_events: list[EventOut]


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
    user_id_hash: str = Field(description="SHA-256 (hex) of the erased userId; never the id")
    requested_by: str = Field(description="'segment' (a delete call) or 'admin'")
    removed: dict[str, int] = Field(description="rows removed per table")
    created_at: datetime


class DeletionPage(BaseModel):
    items: list[DeletionOut]
    next_cursor: str | None
