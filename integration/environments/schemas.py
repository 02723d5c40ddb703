"""An environment's request and response bodies. The admin API parses its bodies with these
(strictly: a wrong JSON type is refused, not coerced) and the OpenAPI document is generated
from them, so the contract and the validation cannot drift. The values themselves (name
pattern, URL rules, secret lengths) are checked by the service, for the CLI as well."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from integration.http.openapi import optional

MAX_GRACE_SECONDS = 365 * 24 * 3600
# An environment's name: lower-case letters, digits, '-' and '_', starting with a letter or digit.
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null")
    return value


class EnvironmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Secrets can be cleared with '' or null; the other settings always hold a value, so null
    # is refused for them and is left out of the document.
    segment_write_key: str | None = Field(
        None,
        description="Segment write key: the write key of your HTTP API source in Segment,"
        " which events are delivered to Segment with (not the intake write key); '' or null"
        " clears",
    )
    stream_enabled: bool | SkipJsonSchema[None] = optional("Stream product events to Segment")
    company_property: str | SkipJsonSchema[None] = optional("Event property naming the company")
    webhook_signing_secret: str | None = Field(
        None, description="Webhook signing secret; '' or null clears"
    )
    segment_api_url: str | SkipJsonSchema[None] = optional("Segment API base URL, or 'us' / 'eu'")
    store_outbound_events: bool | SkipJsonSchema[None] = optional(
        "Also keep a copy of every outbound message in events (direction 'outbound')"
    )
    cors_allowed_origins: list[str] | SkipJsonSchema[None] = optional(
        "Browser origins (scheme://host[:port]) allowed to call the /v1 intake; [] allows none"
    )
    retention_days: int | None = Field(
        None, description="Expire events older than this many days; null keeps them forever"
    )
    blocked_ids: list[str] | None = Field(
        None,
        description="Ids that never identify or merge anyone (a userId among them is stored as"
        " anonymous); matched trimmed and in any case; null: the default placeholders",
    )
    max_anonymous_ids_per_user: int | SkipJsonSchema[None] = optional(
        "No new anonymousId is linked to a user that has this many"
    )
    allow_identified_merges: bool | SkipJsonSchema[None] = optional(
        "Apply an alias of one identified user into another (else it is recorded as a conflict)"
    )

    _present = field_validator(
        "stream_enabled",
        "company_property",
        "segment_api_url",
        "store_outbound_events",
        "cors_allowed_origins",
        "max_anonymous_ids_per_user",
        "allow_identified_merges",
        mode="before",
    )(_not_null)

    def changes(self) -> dict[str, Any]:
        """The settings the body named, with their values (an explicit null included)."""
        return self.model_dump(include=self.model_fields_set - {"name"})


class EnvironmentCreate(EnvironmentSettings):
    name: str = Field(
        description="a-z, 0-9, '-' and '_', up to 64 characters",
        pattern=f"^{NAME_PATTERN}$",
        max_length=64,
    )


class LiveKeyOut(BaseModel):
    hint: str = Field(description="the key's last 4 characters")
    valid_until: datetime = Field(description="when it stops working: the end of its grace")


class EnvironmentOut(BaseModel):
    id: str
    name: str
    webhook_key_hint: str
    source_write_key_hint: str | None = Field(
        description="last 4 characters of the intake write key, the key of our /v1 intake"
        " (null: none yet)"
    )
    previous_webhook_keys: list[LiveKeyOut] = Field(
        description="rotated-out webhook keys still working, each until the end of its own"
        " grace period; the longest-promised first"
    )
    previous_source_write_keys: list[LiveKeyOut] = Field(
        description="rotated-out intake write keys still working, each until its own time"
    )
    stream_enabled: bool
    store_outbound_events: bool
    cors_allowed_origins: list[str]
    company_property: str
    segment_api_url: str
    retention_days: int | None = Field(description="days events are kept; null: forever")
    blocked_ids: list[str] = Field(
        description="ids that never identify or merge anyone (the default list when none was set)"
    )
    blocked_ids_default: bool = Field(description="whether blocked_ids is the default list")
    max_anonymous_ids_per_user: int
    allow_identified_merges: bool
    segment_write_key: str | None = Field(
        description="Segment write key (of your HTTP API source in Segment), masked: last 4"
        " characters"
    )
    webhook_signing_secret: str | None = Field(description="masked: last 4 characters")
    created_at: datetime
    updated_at: datetime


class EnvironmentWithKey(EnvironmentOut):
    webhook_key: str = Field(description="shown only on creation and rotation")
    webhook_url: str
    previous_key_valid_until: datetime | None = Field(
        None, description="when the replaced webhook key stops working (null: it already has)"
    )


class EnvironmentCreated(EnvironmentWithKey):
    source_write_key: str = Field(
        description="the intake write key: Segment libraries and tools publish to our /v1 intake"
        " with it (HTTP Basic user name); shown only on creation and rotation"
    )


class EnvironmentWithSourceKey(EnvironmentOut):
    source_write_key: str = Field(
        description="the new intake write key (the /v1 intake's); shown only on creation and"
        " rotation"
    )
    previous_source_write_key_valid_until: datetime | None = Field(
        None, description="when the replaced intake write key stops working (null: it already has)"
    )


class EnvironmentPage(BaseModel):
    items: list[EnvironmentOut]
    next_cursor: str | None


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # The bounds on the int itself: on the union, pydantic applies them to an explicit null too
    # and raises a TypeError (a 500) instead of letting null mean "the default".
    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] | SkipJsonSchema[None] = Field(
        None,
        description="How long the key being replaced keeps working; 0 revokes it at once."
        " Default: WEBHOOK_KEY_GRACE_SECONDS (webhook key), SOURCE_WRITE_KEY_GRACE_SECONDS"
        " (intake write key). Earlier rotated-out keys keep their own end times",
        json_schema_extra=_no_default,
    )
    end_previous_keys_early: bool = Field(
        False,
        description="A rotation whose grace would end earlier rotated-out keys before the time"
        " each was promised is refused (409 previous_keys_would_end_early) unless this is"
        " true: then they end with the replaced key (at once for grace 0, e.g. a leak)",
    )


ApiKeyScope = Literal["publish", "read"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        description="a label, unique in the environment: a-z, 0-9, '-' and '_', up to 64",
        pattern=f"^{NAME_PATTERN}$",
        max_length=64,
    )
    scopes: list[ApiKeyScope] = Field(
        min_length=1,
        description="publish: send product events; read: users, companies, events, stats"
        " and deliveries of this environment",
    )


class ApiKeyOut(BaseModel):
    id: str
    environment_id: str
    name: str
    scopes: list[ApiKeyScope]
    key_hint: str = Field(description="the key's last 4 characters")
    created_at: datetime


class ApiKeyWithSecret(ApiKeyOut):
    key: str = Field(description="shown only now; send it as Authorization: Bearer <key>")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None


# --- mappings (integration/environments/mappings.py) -----------------------------------------

MAX_TRIGGER_LENGTH = 10_000


class MappingPut(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    trigger: str | None = Field(
        None,
        max_length=MAX_TRIGGER_LENGTH,
        description="Which messages the mapping applies to, in Segment's subscription language"
        ' (`type = "track" and event = "Flow Started"`); null or absent: every message',
    )
    mapping: dict[str, Any] = Field(
        description='The mapping, in Segment\'s mapping-kit JSON (`{"user": {"@path":'
        ' "$.userId"}}`); README, "Mappings (mapping-kit)", lists the directives'
    )


class MappingOut(BaseModel):
    environment_id: str
    direction: Literal["inbound", "outbound"]
    version: int
    trigger: str | None
    mapping: dict[str, Any]
    created_by: str
    created_at: datetime


class MappingVersionPage(BaseModel):
    items: list[MappingOut]  # newest first
    next_cursor: str | None


class MappingPreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: dict[str, Any] = Field(description="A sample message, as Segment would send it")
    mapping: dict[str, Any] | SkipJsonSchema[None] = optional(
        "A mapping to try instead of the current one (nothing is saved)"
    )
    trigger: str | None = Field(
        None,
        max_length=MAX_TRIGGER_LENGTH,
        description="With `mapping`: its trigger (null or absent: every message)",
    )


class MappingPreview(BaseModel):
    version: int | None = Field(description="The version previewed; null for a given mapping")
    matched: bool = Field(description="Whether the trigger selects the message")
    mapped: dict[str, Any] | None = Field(
        description="What the mapping gave; null when not matched or when the mapping failed"
    )
    message: dict[str, Any] = Field(
        description="The message as it would be stored (inbound) or sent (outbound): the given"
        " one with the mapping's top-level keys in place of its own, or the given one unmapped"
        " when not matched or when the mapping failed"
    )
    error: str | None = Field(
        description="Why the mapping failed on this message (it would go on unmapped, with this)"
    )
