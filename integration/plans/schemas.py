"""Request and response bodies of the tracking-plan and quarantine routes (the OpenAPI
document is generated from them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from integration.plans.document import MAX_NAME_CHARS
from integration.plans.quarantine import MAX_ROWS_PER_CALL
from integration.store.models import PlanViolation, Quarantined, TrackingPlan

Json = dict[str, Any]
RowId = Annotated[int, Field(gt=0, le=2**63 - 1)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^\x00]*$")]


class PlanPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Json = Field(
        description='{"events": [{"type": "track", "name": ..., "properties": {name: {"type",'
        ' "enum", "pattern"}}, "required": [...]}]}; a bad one is refused with 422 naming the'
        " path at fault"
    )
    unplanned_event: Literal["allow", "quarantine"] = "allow"
    unplanned_property: Literal["keep", "quarantine"] = "keep"


class PlanOut(BaseModel):
    @classmethod
    def of(cls, row: TrackingPlan) -> PlanOut:
        return cls.model_validate(row, from_attributes=True)

    environment_id: uuid.UUID
    direction: str
    version: int
    plan: Json
    unplanned_event: str
    unplanned_property: str
    created_by: str
    created_at: datetime


class PlanPage(BaseModel):
    items: list[PlanOut]
    next_cursor: str | None


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="the id of the environment that gets the plan as a new version")


class DraftOut(BaseModel):
    direction: str
    days: int
    plan: Json = Field(description="a plan for a person to edit and PUT; not saved")


class QuarantinedOut(BaseModel):
    @classmethod
    def of(cls, row: Quarantined) -> QuarantinedOut:
        return cls.model_validate(row, from_attributes=True)

    id: int
    direction: str
    message_id: str
    type: str
    event: str | None
    held: bool = Field(
        description="true: neither stored nor sent until released; false: stored without the"
        " properties at fault, which releasing restores"
    )
    violations: list[Json]
    message: Json = Field(description="the message whole, as it came")
    received_at: datetime


class QuarantinePage(BaseModel):
    items: list[QuarantinedOut]
    next_cursor: str | None


class QuarantineAction(BaseModel):
    """The ids given, else every quarantined message the filter matches (at most
    MAX_ROWS_PER_CALL per call). A misspelt filter is refused, never widened to all."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[RowId] | None = Field(None, max_length=MAX_ROWS_PER_CALL)
    direction: Literal["inbound", "outbound"] | None = None
    event: Name | None = None
    type: Name | None = None


class QuarantineDone(BaseModel):
    done: int = Field(description="messages released (or discarded) by this call")
    more: bool = Field(description="more match than one call acts on: call again")


class ViolationCount(BaseModel):
    @classmethod
    def of(cls, row: PlanViolation) -> ViolationCount:
        return cls(
            event=row.event,
            property=row.property or None,
            rule=row.rule,
            count=row.count,
            sample=row.sample,
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
        )

    event: str = Field(description="the event's name, else its type")
    property: str | None = Field(description="null: the event itself (an unplanned event)")
    rule: str = Field(
        description="unplanned_event, unplanned_property, type, enum, pattern or required"
    )
    count: int
    sample: Any = Field(description="the latest value at fault, cut short")
    first_seen_at: datetime
    last_seen_at: datetime


class ViolationList(BaseModel):
    items: list[ViolationCount] = Field(description="the most frequent first")
