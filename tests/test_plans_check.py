"""Tracking plans as a pure library: a plan validated with errors naming the path, patterns
refused when they could backtrack for long, and the verdict on messages."""

from __future__ import annotations

import time
from typing import Any

import pytest

from integration.errors import Unprocessable
from integration.plans.check import Plan, check
from integration.plans.document import Settings, parse_plan
from integration.plans.draft import draft
from integration.plans.patterns import MAX_SUBJECT_CHARS, UnsafePattern, compile_pattern

ORDER = {
    "type": "track",
    "name": "Order Completed",
    "properties": {
        "total": {"type": "number"},
        "items": {"type": "integer"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "coupon": {"type": ["string", "null"], "pattern": "^[A-Z0-9]+$"},
    },
    "required": ["total", "currency"],
}
PLAN = {"events": [ORDER, {"type": "identify", "properties": {"email": {"type": "string"}}}]}


def plan(
    direction: str = "inbound", *, event: str = "allow", prop: str = "keep", doc: Any = None
) -> Plan:
    settings = Settings(unplanned_event=event, unplanned_property=prop)  # type: ignore[arg-type]
    return Plan(parse_plan(doc or PLAN), settings, direction)


def order(**properties: Any) -> dict[str, Any]:
    base = {"total": 12.5, "currency": "EUR"}
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "userId": "u-1",
        "properties": {**base, **properties},
    }


def rules(verdict: Any) -> list[tuple[str | None, str]]:
    return [(v.property, v.rule) for v in verdict.violations]


def test_a_message_that_fits_passes_as_it_is() -> None:
    message = order(items=3, coupon=None)
    verdict = check(message, plan(prop="quarantine"))
    assert verdict.message is message and not verdict.quarantine and verdict.violations == ()


def test_an_unplanned_property_is_stored_without_it_and_kept_whole_in_quarantine() -> None:
    message = order(secret_flag=True)
    verdict = check(message, plan(prop="quarantine"))
    assert verdict.quarantine and not verdict.held
    assert verdict.message is not None and "secret_flag" not in verdict.message["properties"]
    assert verdict.message["properties"] == {"total": 12.5, "currency": "EUR"}
    assert message["properties"]["secret_flag"] is True  # the original stays whole
    assert rules(verdict) == [("secret_flag", "unplanned_property")]
    assert verdict.violations[0].sample is True


def test_keep_passes_the_message_whole_and_still_names_the_violations() -> None:
    message = order(secret_flag=True, currency="GBP")
    verdict = check(message, plan(prop="keep"))
    assert verdict.message is message and not verdict.quarantine
    assert sorted(rules(verdict)) == [("currency", "enum"), ("secret_flag", "unplanned_property")]


def test_outbound_holds_the_whole_message_instead_of_sending_part_of_it() -> None:
    verdict = check(order(secret_flag=True), plan("outbound", prop="quarantine"))
    assert verdict.held and verdict.quarantine


@pytest.mark.parametrize(
    ("properties", "rule"),
    [
        ({"total": "12"}, "type"),
        ({"items": 2.5}, "type"),
        ({"items": True}, "type"),
        ({"currency": "GBP"}, "enum"),
        ({"coupon": "lower-case"}, "pattern"),
    ],
)
def test_invalid_values_are_named_by_rule_and_removed(
    properties: dict[str, Any], rule: str
) -> None:
    verdict = check(order(**properties), plan(prop="quarantine"))
    (name,) = properties
    assert rules(verdict) == [(name, rule)]
    assert verdict.message is not None and name not in verdict.message["properties"]


def test_json_types_follow_json_schema() -> None:
    verdict = check(order(items=4.0, total=3, coupon="ABC1"), plan(prop="quarantine"))
    assert verdict.violations == ()  # 4.0 is an integer, 3 a number, ABC1 matches


def test_enum_tells_true_from_one() -> None:
    doc = {"events": [{"type": "track", "name": "E", "properties": {"n": {"enum": [1]}}}]}
    verdict = check({"type": "track", "event": "E", "properties": {"n": True}}, plan(doc=doc))
    assert rules(verdict) == [("n", "enum")]


def test_a_missing_required_property_quarantines_a_copy_and_stores_the_rest() -> None:
    message = order()
    del message["properties"]["currency"]
    verdict = check(message, plan(prop="quarantine"))
    assert rules(verdict) == [("currency", "required")]
    assert verdict.quarantine and verdict.message == message


def test_an_unplanned_event_is_allowed_or_held_whole() -> None:
    message = {"type": "track", "event": "Mystery", "properties": {"a": 1}}
    allowed = check(message, plan(event="allow"))
    assert allowed.message is message and not allowed.quarantine
    assert rules(allowed) == [(None, "unplanned_event")]
    held = check(message, plan(event="quarantine"))
    assert held.held and held.quarantine


def test_identify_traits_are_checked_and_unlisted_types_are_not() -> None:
    verdict = check({"type": "identify", "traits": {"email": 5}}, plan(prop="quarantine"))
    assert rules(verdict) == [("email", "type")]
    assert verdict.message is not None and verdict.message["traits"] == {}
    for message in ({"type": "group", "traits": {"x": 1}}, {"type": "alias", "previousId": "a"}):
        assert check(message, plan(event="quarantine", prop="quarantine")).violations == ()


def test_a_nameless_page_entry_takes_every_page_a_named_one_does_not() -> None:
    doc = {
        "events": [
            {"type": "page", "properties": {"path": {"type": "string"}}},
            {"type": "page", "name": "Home", "properties": {}},
        ]
    }
    p = plan(doc=doc, event="quarantine", prop="quarantine")
    assert (
        check({"type": "page", "name": "Pricing", "properties": {"path": "/p"}}, p).violations == ()
    )
    home = check({"type": "page", "name": "Home", "properties": {"path": "/"}}, p)
    assert rules(home) == [("path", "unplanned_property")]


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"events": [{"type": "track"}]}, "events[0].name"),
        ({"events": [{"type": "trak", "name": "x"}]}, "events[0].type"),
        (
            {"events": [{**ORDER, "properties": {"total": {"type": "float"}}}]},
            "events[0].properties.total.type",
        ),
        (
            {"events": [{**ORDER, "properties": {"total": {"typ": "number"}}}]},
            "events[0].properties.total.typ",
        ),
        ({"events": [ORDER, ORDER]}, "events[1]"),
        ({"events": [{**ORDER, "required": ["nope"]}]}, "events[0].required[0]"),
        ({"events": [{"type": "identify", "name": "x"}]}, "events[0].name"),
        (
            {
                "events": [
                    {"type": "track", "name": "x", "properties": {"p": {"pattern": "(a+)+$"}}}
                ]
            },
            "events[0].properties.p.pattern",
        ),
        (
            {"events": [{"type": "track", "name": "x", "properties": {"p": {"pattern": "("}}}]},
            "events[0].properties.p.pattern",
        ),
        ({"evnts": []}, "evnts"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        parse_plan(doc)
    assert caught.value.status_code == 422
    assert caught.value.extra["field"] == path, caught.value.detail
    assert caught.value.detail.startswith(path)


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a|aa)*b", "(x{1,20}){2,}", ".*.*.*x", "a" * 300],
)
def test_patterns_that_can_backtrack_for_long_are_refused(pattern: str) -> None:
    with pytest.raises(UnsafePattern):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["^[A-Z0-9]+$", r"^\d{3}-\d{4}$", "^(foo|bar)$", "^(?:ab)?c+$", r"^[a-z]+_[0-9]+$", "(ab)+"],
)
def test_ordinary_patterns_compile(pattern: str) -> None:
    compile_pattern(pattern)


def test_the_worst_pattern_allowed_stays_fast() -> None:
    doc = {"events": [{"type": "track", "name": "E", "properties": {"p": {"pattern": ".*.*x"}}}]}
    p = plan(doc=doc, prop="quarantine")
    started = time.perf_counter()
    near = check({"type": "track", "event": "E", "properties": {"p": "a" * MAX_SUBJECT_CHARS}}, p)
    over = check({"type": "track", "event": "E", "properties": {"p": "a" * 10_000}}, p)
    # Unguarded, 1,024 characters took 69 s; the bound leaves a busy machine room.
    assert time.perf_counter() - started < 5.0
    assert rules(near) == rules(over) == [("p", "pattern")]
    assert "longer than" in over.violations[0].detail


def test_one_compiled_plan_checks_many_messages_alike() -> None:
    # Its cost is a figure for `make bench`, not for a timed test.
    p = plan(prop="quarantine")
    messages = [order(items=i, coupon="C1", extra=i) for i in range(500)]
    verdicts = [check(m, p) for m in messages]
    assert all(rules(v) == [("extra", "unplanned_property")] for v in verdicts)


def test_a_draft_is_a_valid_plan_of_what_was_seen() -> None:
    drafted = draft(
        [
            ("track", "Signed Up", {"plan": "pro", "seats": 3}),
            ("track", "Signed Up", {"plan": "free", "seats": 1.5, "ref": None}),
            ("identify", None, {"email": "a@b.c"}),
            ("alias", None, None),
            ("track", None, {"x": 1}),
        ]
    )
    assert drafted == {
        "events": [
            {
                "type": "identify",
                "properties": {"email": {"type": "string"}},
                "required": ["email"],
            },
            {
                "type": "track",
                "name": "Signed Up",
                "properties": {
                    "plan": {"type": "string"},
                    "ref": {"type": "null"},
                    "seats": {"type": ["integer", "number"]},
                },
                "required": ["plan", "seats"],
            },
        ]
    }
    parse_plan(drafted)
