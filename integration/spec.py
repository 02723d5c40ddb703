"""Segment spec messages: parse, validate and normalise. Knows nothing of the database.

Both directions use it: the webhook validates what Segment sends us, and the outbound
side validates what the product publishes before it goes to Segment. A refused message is a
`Rejection` whichever door it came through, and `require_valid` is the one rule for a request
none of whose messages is valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from integration.config import KIB

KNOWN_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
# The types that record something a user did (and so may belong to a company).
EVENT_TYPES = ("track", "page", "screen")
# The classic Webhooks destination forwards a GDPR deletion as a message of this type.
DELETE = "delete"
MAX_MESSAGE_BYTES = 32 * KIB
# Names and ids are text of at most this many characters (event names, page names, ids)...
MAX_TEXT_CHARS = 1024
# Webhooks (Actions) batches hold at most 4,000 events; nothing legitimate sends more at once.
MAX_BATCH_MESSAGES = 4000
# Ids are keys of Postgres btree indexes, whose entries hold at most ~2700 bytes (two ids of
# a membership together), so ids are bounded in bytes of UTF-8, not in characters.
MAX_ID_BYTES = KIB  # ...and ids, index keys, at most this many bytes of UTF-8


class MessageError(ValueError):
    """One message is unacceptable. `error` is a stable code, `detail` a sentence for people."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message refused, and why: the one type every door lists its refusals in. Each door
    renders it in its own answer's shape (`as_dict` is the one our answers and Segment's share)."""

    index: int  # where the message stood in the request
    error: str
    detail: str
    message_id: str | None = None
    item: Any = field(default=None, repr=False, compare=False)  # as sent, for the live view

    @classmethod
    def of(cls, index: int, exc: MessageError, item: Any = None) -> Rejection:
        """The refusal of the message `item` at `index`, naming its messageId when it has one."""
        given = item.get("messageId") if isinstance(item, dict) else None
        message_id = given if isinstance(given, str) else None
        return cls(index, exc.error, exc.detail, message_id, item)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "error": self.error, "detail": self.detail}
        if self.message_id:
            out["messageId"] = self.message_id
        return out


class NoneValid(MessageError):
    """No message of a request is valid: nothing would be stored, and no retry can fix it.

    The one rule for what such a request is told: refused for the message's own reason when
    one message was refused, as an invalid batch when several were (`several`: each door then
    lists them, in its own shape)."""

    def __init__(self, rejected: list[Rejection]) -> None:
        first = rejected[0]
        self.rejected = rejected
        self.several = len(rejected) > 1
        if self.several:
            super().__init__("invalid_batch", "no message in the batch is valid")
        else:
            super().__init__(first.error, first.detail)


def require_valid(valid: int, rejected: list[Rejection]) -> None:
    """Raise NoneValid when none of a request's messages is valid (`valid` counts the others)."""
    if not valid:
        raise NoneValid(rejected)


def _id(value: Any) -> Any:
    """Segment ids are strings; numbers are common in the wild and kept as their text."""
    if isinstance(value, bool):
        return value  # rejected by the str type below
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _id_bytes(value: str | None) -> str | None:
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise PydanticCustomError("id_too_long", "is too long")
    return value


def fit_id(value: str) -> str:
    """An id taken from free-form data (a property, context.groupId), cut to what an index holds."""
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_ID_BYTES:
        return value
    return encoded[:MAX_ID_BYTES].decode("utf-8", "ignore")


def _utc(value: Any) -> Any:
    """In UTC; a time that has no UTC equivalent (beyond year 9999 or before year 1) is refused,
    since it could be stored but not read back."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError("datetime_out_of_range", "is out of range") from None
    return value


def _object(value: Any) -> Any:
    """Segment's PHP library encodes an empty object as `[]` (PHP has one array type), for any
    field; Segment's own deletion requests carry `"context": []` too. Read it as `{}`."""
    if isinstance(value, list) and not value:
        return {}
    return value


Id = Annotated[
    Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None,
    BeforeValidator(_id),
    AfterValidator(_id_bytes),
]
Time = Annotated[datetime | None, AfterValidator(_utc)]
Object = Annotated[dict[str, Any] | None, BeforeValidator(_object)]
# The four time fields, by their Segment names. Read by `parse_time`, not by the model: a value
# that is not a time is refused for what we publish, but kept raw for what Segment sends us.
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
_TIME: TypeAdapter[datetime | None] = TypeAdapter(Time)


def parse_time(value: Any) -> datetime | None:
    """A message's time field as the fields below read it (ISO-8601, in UTC); None when it is
    absent or not a time. The common shape is read by the standard library, several times
    faster than a validator, which still reads every other shape the fields accept."""
    if isinstance(value, str) and len(value) >= 20 and value[10] == "T":
        try:
            moment: datetime = _utc(datetime.fromisoformat(value))
            return moment
        except (ValueError, PydanticCustomError):
            pass
    try:
        return _TIME.validate_python(value)
    except ValidationError:
        return None


class _Fields(BaseModel):
    """The typed fields of a spec message; everything else is kept in `extra`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str
    message_id: Id = Field(None, alias="messageId")
    user_id: Id = Field(None, alias="userId")
    anonymous_id: Id = Field(None, alias="anonymousId")
    group_id: Id = Field(None, alias="groupId")
    previous_id: Id = Field(None, alias="previousId")
    event: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    name: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    properties: Object = None
    traits: Object = None
    context: Object = None
    integrations: Object = None
    timestamp: Any = None
    original_timestamp: Any = Field(None, alias="originalTimestamp")
    sent_at: Any = Field(None, alias="sentAt")
    received_at: Any = Field(None, alias="receivedAt")


@dataclass(slots=True)
class Message:
    """A validated message, ready to be stored or sent."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    name: str | None
    properties: dict[str, Any] | None
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    extra: dict[str, Any] | None
    timestamp: datetime
    sent_at: datetime | None
    received_at: datetime | None
    # Why the environment's mapping failed on it: it goes on unmapped, with this attached.
    mapping_error: str | None = None
    # The JSON object it was parsed from, as it came: what a tracking plan judges and its
    # quarantine keeps whole (None for a `delete`, which no plan judges).
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def context_group_id(self) -> str | None:
        value = (self.context or {}).get("groupId")
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = _id(value)
            return fit_id(value) if value else None
        return None


_TYPE_WORDS = {
    "dict_type": "must be a JSON object",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "too_long": "is too long",
    "string_too_long": f"is too long ({MAX_TEXT_CHARS} characters at most)",
    "id_too_long": f"is too long ({MAX_ID_BYTES} bytes of UTF-8 at most)",
    "datetime_out_of_range": "is out of range (a date-time from year 1 to 9999 in UTC)",
}


def company_of(message: Message, company_property: str) -> str | None:
    """The company a message belongs to: a group call's groupId; an identify's or an event's
    own groupId (which Segment's spec has on group calls only: on the others, a mapping put it
    there); for an event, else, the environment's company property, else context.groupId
    (Segment has no notion of it)."""
    if message.type == "group":
        return message.group_id
    if message.group_id and message.type in ("identify", *EVENT_TYPES):
        return message.group_id
    if message.type not in EVENT_TYPES:
        return None
    value = (message.properties or {}).get(company_property)
    if isinstance(value, str) and value.strip():
        return fit_id(value[:MAX_TEXT_CHARS])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return message.context_group_id


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "message"
        field = field.split(".")[0]
        kind = err["type"]
        if kind in _TYPE_WORDS:
            words = _TYPE_WORDS[kind]
        elif kind.startswith(("datetime", "date", "timezone")):
            words = "must be an ISO-8601 date-time"
        else:
            words = _TYPE_WORDS.get(kind, err["msg"])
        parts.append(f"{field} {words}")
    return "; ".join(dict.fromkeys(parts))


def oversized(size: int) -> str | None:
    """Segment's one size rule for a message (its compact JSON), in words when it is broken."""
    if size <= MAX_MESSAGE_BYTES:
        return None
    return f"message is {size} bytes; Segment accepts at most {MAX_MESSAGE_BYTES} bytes per message"


def decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError("invalid_json", f"body is not valid JSON: {exc}") from None


# Stored rows and Segment batches wrap a message a few levels deeper than it arrives; a
# message must still encode there (orjson stops at 255 levels of nesting).
_WRAP_LEVELS = 4


def encode(raw: dict[str, Any]) -> bytes:
    """The message as compact JSON, or MessageError if it cannot be JSON: integers beyond
    64 bits, lone surrogates, non-string keys, or nesting too deep to store."""
    try:
        wrapped = orjson.dumps([[[[raw]]]])
    except orjson.JSONEncodeError as exc:
        if "Recursion" in str(exc):
            detail = "message is nested too deeply (about 250 levels at most)"
        else:
            detail = f"message cannot be encoded as JSON: {exc}"
        raise MessageError("invalid_message", detail) from None
    return wrapped[_WRAP_LEVELS:-_WRAP_LEVELS]


def _has_nul(value: Any) -> bool:
    """A real NUL (which Postgres text and jsonb refuse), not the six characters `\\u0000`."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


DERIVED_PREFIX = "derived-"


def is_derived(message_id: str | None) -> bool:
    """Whether a messageId is one `derive_message_id` made (the message came without one)."""
    return message_id is not None and message_id.startswith(DERIVED_PREFIX)


def derive_message_id(raw: dict[str, Any]) -> str:
    """A stable id from the content, so a retried message without messageId still dedupes."""
    digest = hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{DERIVED_PREFIX}{digest[:40]}"


def parse(
    raw: Any,
    *,
    now: datetime | None = None,
    sized: bool = True,
    encoded: bytes | None = None,
    keep_bad_times: bool = False,
) -> Message:
    """Validate one message (already JSON-decoded). Raises MessageError saying what is wrong.

    `sized=False` skips the size rule, for callers that dead-letter oversized messages instead
    of refusing them; `encoded` is the message's compact JSON when the caller has it already.
    `keep_bad_times=True` (what Segment sends us) keeps a time field that does not parse as it
    came, among the message's other fields, and takes the message's time from another field:
    Segment drops a refused message for good, so a wrong clock must not cost the event.

    A `delete` (a GDPR deletion request) needs a userId and nothing else: whatever else it
    carries, refusing it would leave the person in the store."""
    if not isinstance(raw, dict):
        raise MessageError("invalid_message", "each message must be a JSON object")
    if isinstance(raw.get("type"), str) and raw["type"].lower() == DELETE:
        return _delete(raw, now)
    if encoded is None:
        encoded = encode(raw)
    if sized and (reason := oversized(len(encoded))):
        raise MessageError("message_too_large", reason)
    if b"\\u0000" in encoded and _has_nul(raw):
        raise MessageError("invalid_message", "message contains a NUL character (\\u0000)")
    if not isinstance(raw.get("type"), str) or not raw["type"]:
        raise MessageError("missing_type", "type is required and must be a string")
    kind = raw["type"].lower()
    if kind not in KNOWN_TYPES:
        return _unknown(raw, kind, now)
    try:
        fields = _Fields.model_validate(raw)
    except ValidationError as exc:
        raise MessageError("invalid_field", _describe(exc)) from None
    _check_rules(kind, fields)
    return _build(kind, fields, raw, now, keep_bad_times=keep_bad_times)


def _check_rules(kind: str, f: _Fields) -> None:
    if kind == "alias":
        if not f.previous_id:
            raise MessageError("missing_previous_id", "alias requires previousId")
        if not f.user_id:
            raise MessageError("missing_user_id", "alias requires userId")
        return
    if not f.user_id and not f.anonymous_id:
        raise MessageError("missing_identity", f"{kind} requires userId or anonymousId")
    if kind == "track" and not (f.event and f.event.strip()):
        raise MessageError("missing_event", "track requires a non-empty event name")
    if kind == "group" and not f.group_id:
        raise MessageError("missing_group_id", "group requires groupId")


@dataclass(frozen=True, slots=True)
class _Times:
    timestamp: datetime | None
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime | None
    unparsed: dict[str, Any]  # by Segment name: values that are not a time, as they came


def _times(f: _Fields, *, keep_bad_times: bool) -> _Times:
    given = (f.timestamp, f.original_timestamp, f.sent_at, f.received_at)
    read: list[datetime | None] = []
    unparsed: dict[str, Any] = {}
    for name, value in zip(TIME_FIELDS, given, strict=True):
        moment = parse_time(value)
        if moment is None and value is not None:
            if not keep_bad_times:
                raise MessageError("invalid_field", f"{name} must be an ISO-8601 date-time")
            unparsed[name] = value
        read.append(moment)
    timestamp, original_timestamp, sent_at, received_at = read
    return _Times(timestamp, original_timestamp, sent_at, received_at, unparsed)


def _build(
    kind: str, f: _Fields, raw: dict[str, Any], now: datetime | None, *, keep_bad_times: bool
) -> Message:
    t = _times(f, keep_bad_times=keep_bad_times)
    ts = t.timestamp or t.original_timestamp or t.received_at or now or datetime.now(UTC)
    extra = {**(f.model_extra or {}), **t.unparsed}
    return Message(
        type=kind,
        message_id=f.message_id or derive_message_id(raw),
        user_id=f.user_id,
        anonymous_id=f.anonymous_id,
        group_id=f.group_id,
        previous_id=f.previous_id,
        name=f.event if kind == "track" else f.name,
        properties=f.properties,
        traits=f.traits,
        context=f.context,
        extra=extra or None,
        timestamp=ts,
        sent_at=t.sent_at,
        received_at=t.received_at,
        raw=raw,
    )


def _delete(raw: dict[str, Any], now: datetime | None) -> Message:
    """A GDPR deletion: its userId (as the other types read ids), and a messageId so that a
    redelivered copy is recognised. Nothing else is read, so nothing else can refuse it."""
    user_id = _id(raw.get("userId"))
    if not isinstance(user_id, str) or "\x00" in user_id:
        raise MessageError("missing_user_id", "delete requires userId (a string)")
    message_id = _id(raw.get("messageId"))
    if not isinstance(message_id, str) or "\x00" in message_id:
        message_id = _derived_or_none(raw) or derive_message_id(
            {"type": DELETE, "userId": user_id.encode("utf-8", "surrogatepass").hex()}
        )
    return Message(
        type=DELETE,
        message_id=message_id,
        user_id=user_id,
        anonymous_id=None,
        group_id=None,
        previous_id=None,
        name=None,
        properties=None,
        traits=None,
        context=None,
        extra=None,
        timestamp=now or datetime.now(UTC),
        sent_at=None,
        received_at=None,
    )


def _derived_or_none(raw: dict[str, Any]) -> str | None:
    try:
        return derive_message_id(raw)
    except orjson.JSONEncodeError:  # a lone surrogate: such a message has no stable digest
        return None


def _unknown(raw: dict[str, Any], kind: str, now: datetime | None) -> Message:
    """Forward compatible: a type we do not know is kept verbatim and acknowledged."""
    message_id = _loose_id(raw.get("messageId"))
    return Message(
        type=kind[:64],
        message_id=message_id or derive_message_id(raw),
        user_id=_loose_id(raw.get("userId")),
        anonymous_id=_loose_id(raw.get("anonymousId")),
        group_id=None,
        previous_id=None,
        name=None,
        properties=None,
        traits=None,
        context=None,
        extra=raw,
        timestamp=now or datetime.now(UTC),
        sent_at=None,
        received_at=None,
        raw=raw,
    )


def _loose_id(value: Any) -> str | None:
    value = _id(value)
    return fit_id(value[:MAX_TEXT_CHARS]) if isinstance(value, str) else None


def parse_batch(payload: Any) -> list[Any]:
    """The body is one message or a JSON array of them (Webhooks Actions batch mode)."""
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("batch"), list)
        and "type" not in payload
    ):
        payload = payload["batch"]  # the Tracking API's own batch envelope
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        if not payload:
            raise MessageError("empty_batch", "the array holds no messages")
        return payload
    raise MessageError("invalid_body", "body must be a JSON object or an array of objects")
