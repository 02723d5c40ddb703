"""Property tests of the Segment message parser, and of the webhook over HTTP.

Whatever JSON arrives, `spec.parse` and `spec.parse_batch` either accept it or raise
`MessageError` (which the webhook turns into a 400): never another exception, which would be
a 500 and make Segment retry forever. Every valid message of the spec parses and keeps its
messageId. Over HTTP, arbitrary bodies never get a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from integration import spec
from tests.processes import Process
from tests.segment_payloads import Env, MakeEnv

# Arbitrary JSON-like values, as a caller in Python (the outbound side) could hand them over:
# any text (NUL and lone surrogates included), integers of any size, infinite floats.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
ANY_SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
ANY_JSON = st.recursive(
    ANY_SCALAR,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)

TYPES = ["identify", "track", "page", "screen", "group", "alias"]
FIELDS = [
    "messageId",
    "userId",
    "anonymousId",
    "groupId",
    "previousId",
    "event",
    "name",
    "properties",
    "traits",
    "context",
    "integrations",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
]
TIME_TEXT = st.sampled_from(
    [
        "2024-05-14T09:30:00.000Z",
        "2024-05-14T09:30:00+02:00",
        "2024-05-14",
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
        "yesterday",
        "",
    ]
)
# Dicts shaped like messages, so that the arbitrary values reach the field validators.
MESSAGE_LIKE = st.fixed_dictionaries(
    {"type": st.sampled_from([*TYPES, "Track", "IDENTIFY", "experiment_viewed", ""]) | ANY_JSON},
    optional={name: ANY_JSON | TIME_TEXT for name in FIELDS},
)
ANYTHING = (
    ANY_JSON
    | MESSAGE_LIKE
    | st.lists(MESSAGE_LIKE, max_size=3)
    | st.fixed_dictionaries(
        {"batch": st.lists(MESSAGE_LIKE, max_size=3)}, optional={"type": ANY_JSON}
    )
)


def _check_message(message: spec.Message) -> None:
    assert isinstance(message.message_id, str) and message.message_id
    assert len(message.message_id.encode()) <= spec.MAX_ID_BYTES
    assert message.type and message.type == message.type.lower()
    assert message.timestamp.utcoffset() == timedelta(0)
    for value in (message.user_id, message.anonymous_id, message.group_id, message.previous_id):
        assert value is None or (value.strip() and len(value.encode()) <= spec.MAX_ID_BYTES)


@settings(max_examples=250)
@given(ANY_JSON | MESSAGE_LIKE)
def test_parse_accepts_or_raises_message_error(value: Any) -> None:
    try:
        message = spec.parse(value)
    except spec.MessageError as exc:
        assert exc.error and exc.detail
        return
    _check_message(message)


@settings(max_examples=200)
@given(ANYTHING)
def test_parse_batch_accepts_or_raises_message_error(value: Any) -> None:
    try:
        items = spec.parse_batch(value)
    except spec.MessageError as exc:
        assert exc.error and exc.detail
        return
    assert isinstance(items, list) and items
    for item in items:
        try:
            _check_message(spec.parse(item))
        except spec.MessageError as exc:
            assert exc.error and exc.detail


# Valid messages. Text here is what a real source sends: no NUL, no lone surrogates.

SOURCE_CHARACTERS = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
TEXT = st.text(SOURCE_CHARACTERS, max_size=24)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALAR,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=15,
)
OBJECT = st.dictionaries(TEXT, JSON, max_size=5)
ID = st.text(SOURCE_CHARACTERS, min_size=1, max_size=40).filter(str.strip) | st.integers(
    min_value=0, max_value=2**53
)
NAME = TEXT.filter(str.strip)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.sampled_from(ZONES)
)


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(TYPES))
    msg: dict[str, Any] = {"type": kind}
    if kind == "alias":
        msg["userId"] = draw(ID)
        msg["previousId"] = draw(ID)
    else:
        who = draw(st.sampled_from(["user", "anonymous", "both"]))
        if who != "anonymous":
            msg["userId"] = draw(ID)
        if who != "user":
            msg["anonymousId"] = draw(ID)
    if kind == "track":
        msg["event"] = draw(NAME)
    if kind in ("page", "screen") and draw(st.booleans()):
        msg["name"] = draw(NAME)
    if kind == "group":
        msg["groupId"] = draw(ID)
    if kind in ("identify", "group"):
        msg["traits"] = draw(OBJECT)
    if kind in ("track", "page", "screen"):
        msg["properties"] = draw(OBJECT)
    if draw(st.booleans()):
        msg["messageId"] = draw(ID.filter(lambda v: isinstance(v, str)))
    if draw(st.booleans()):
        msg["timestamp"] = draw(TIMES).isoformat()
    msg["context"] = draw(st.fixed_dictionaries({}, optional={"ip": TEXT, "traits": OBJECT}))
    msg.update(draw(st.dictionaries(st.sampled_from(["channel", "version", "projectId"]), JSON)))
    return msg


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@settings(max_examples=200)
@given(valid_messages())
def test_valid_messages_parse_and_keep_their_message_id(raw: dict[str, Any]) -> None:
    assume(len(orjson.dumps(raw)) <= spec.MAX_MESSAGE_BYTES)
    message = spec.parse(raw)

    assert message.type == raw["type"]
    if "messageId" in raw:
        assert message.message_id == raw["messageId"]
    else:
        assert message.message_id.startswith("derived-")
    assert message.user_id == _text(raw.get("userId"))
    assert message.anonymous_id == _text(raw.get("anonymousId"))
    assert message.group_id == _text(raw.get("groupId"))
    assert message.previous_id == _text(raw.get("previousId"))
    assert message.name == (raw.get("event") if raw["type"] == "track" else raw.get("name"))
    assert message.properties == raw.get("properties")
    assert message.traits == raw.get("traits")
    assert message.context == raw["context"]
    if "timestamp" in raw:
        assert message.timestamp == datetime.fromisoformat(raw["timestamp"])
    assert message.timestamp.utcoffset() == timedelta(0)
    # The same message, as it arrives over the wire, gets the same id (redeliveries dedupe).
    assert spec.parse(orjson.loads(orjson.dumps(raw))).message_id == message.message_id


@settings(max_examples=50)
@given(st.lists(valid_messages(), min_size=1, max_size=4), st.booleans())
def test_a_batch_of_valid_messages_is_kept_whole_and_in_order(
    batch: list[dict[str, Any]], envelope: bool
) -> None:
    assert (
        spec.parse_batch({"batch": batch, "sentAt": "2024-05-14T09:30:00Z"} if envelope else batch)
        == batch
    )
    assert spec.parse_batch(batch[0]) == [batch[0]]


# Over HTTP, against the real server.

HTTP_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def fuzz_env(make_environment: MakeEnv) -> Env:
    return await make_environment("fuzz")


@pytest.fixture
def client(server: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _answer_is_sound(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert set(body) == {"stored", "duplicates", "rejected"}
    else:
        assert response.status_code == 400, response.text
        assert isinstance(body["error"], str) and isinstance(body["detail"], str)


@HTTP_SETTINGS
@given(body=ANYTHING)
def test_server_never_answers_5xx_to_any_json(
    client: httpx.Client, fuzz_env: Env, body: Any
) -> None:
    # The stdlib encoder writes what orjson will not: big integers, Infinity, escaped surrogates.
    content = json.dumps(body).encode()
    _answer_is_sound(client.post(fuzz_env.webhook_path, content=content))


@HTTP_SETTINGS
@given(body=st.binary(max_size=256) | st.text(max_size=64).map(str.encode))
def test_server_never_answers_5xx_to_any_bytes(
    client: httpx.Client, fuzz_env: Env, body: bytes
) -> None:
    _answer_is_sound(client.post(fuzz_env.webhook_path, content=body))


@HTTP_SETTINGS
@given(raw=valid_messages())
def test_server_stores_every_valid_message(
    client: httpx.Client, fuzz_env: Env, raw: dict[str, Any]
) -> None:
    assume(len(orjson.dumps(raw)) <= spec.MAX_MESSAGE_BYTES)
    response = client.post(fuzz_env.webhook_path, content=orjson.dumps(raw))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["rejected"] == []
    assert answer["stored"] + answer["duplicates"] == 1
