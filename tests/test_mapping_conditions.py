"""Triggers (integration/mapping/conditions.py): Segment's subscription language.

The parse cases are Segment's published ones, with the tree Segment's parser gives, from
segmentio/action-destinations packages/destination-subscriptions/src/__tests__/fql.test.ts;
the matching cases come from __tests__/validate.test.ts (written there as trees, here as the
text that parses to each tree). After them: where this parser refuses what Segment's reads
as something else, and how its errors name the character.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration.mapping import InvalidMapping, parse_condition


def group(operator: str, *children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "group", "operator": operator, "children": list(children)}


def leaf(type_: str, operator: str, value: Any = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "operator": operator}
    if name is not None:
        out["name"] = name
    if value is not None:
        out["value"] = value
    return out


ADDED = leaf("event", "=", "Product Added")

# fql.test.ts: each text and the tree parseFql gives for it.
SEGMENT_TREES = [
    ("traits.test = true", group("and", leaf("event-trait", "is_true", name="test"))),
    ('traits.test = "true"', group("and", leaf("event-trait", "=", "true", "test"))),
    ("traits.test = false", group("and", leaf("event-trait", "is_false", name="test"))),
    ('properties.foo.bar = "baz"', group("and", leaf("event-property", "=", "baz", "foo.bar"))),
    ('type = "track"', group("and", leaf("event-type", "=", "track"))),
    (
        'type = "track" or type = "identify"',
        group("or", leaf("event-type", "=", "track"), leaf("event-type", "=", "identify")),
    ),
    ('event = "Product Added"', group("and", ADDED)),
    ("userId != null", group("and", leaf("userId", "exists"))),
    ('context.foo = "bar"', group("and", leaf("event-context", "=", "bar", "foo"))),
    ('name = "Home"', group("and", leaf("name", "=", "Home"))),
    ("name != null", group("and", leaf("name", "exists"))),
    ("name = null", group("and", leaf("name", "not_exists"))),
    (
        'event = "Product Added" or event = "Order Completed"',
        group("or", ADDED, leaf("event", "=", "Order Completed")),
    ),
    (
        'type = "track" and event = "Product Added"',
        group("and", leaf("event-type", "=", "track"), ADDED),
    ),
    (
        'type = "track" and (event = "Product Added" or event = "Order Completed")',
        group(
            "and",
            leaf("event-type", "=", "track"),
            group("or", ADDED, leaf("event", "=", "Order Completed")),
        ),
    ),
    (
        'event = "Product Added" and properties.price >= 100',
        group("and", ADDED, leaf("event-property", ">=", 100, "price")),
    ),
    (
        'event = "identify" and traits.logins >= 10',
        group("and", leaf("event", "=", "identify"), leaf("event-trait", ">=", 10, "logins")),
    ),
    (
        'event = "Product Added" and properties.price >= 100 and properties.premium = "true"',
        group(
            "and",
            ADDED,
            leaf("event-property", ">=", 100, "price"),
            leaf("event-property", "=", "true", "premium"),
        ),
    ),
    (
        '(event = "Product Added" and properties.price >= 100) or '
        '(event = "Order Completed" and properties.total >= 500)',
        group(
            "or",
            group("and", ADDED, leaf("event-property", ">=", 100, "price")),
            group(
                "and",
                leaf("event", "=", "Order Completed"),
                leaf("event-property", ">=", 500, "total"),
            ),
        ),
    ),
    ('contains(event, "Nike")', group("and", leaf("event", "contains", "Nike"))),
    (
        'event = "Product Added" and contains(properties.name, "Nike")',
        group("and", ADDED, leaf("event-property", "contains", "Nike", "name")),
    ),
    (
        'event = "Product Added" and contains(traits.name, "Nike")',
        group("and", ADDED, leaf("event-trait", "contains", "Nike", "name")),
    ),
    ('!contains(event, "Nike")', group("and", leaf("event", "not_contains", "Nike"))),
    (
        'event = "Product Added" and !contains(properties.name, "Nike")',
        group("and", ADDED, leaf("event-property", "not_contains", "Nike", "name")),
    ),
    ('match(event, "X*")', group("and", leaf("event", "starts_with", "X"))),
    (
        'event = "Product Added" and match(traits.name, "X*")',
        group("and", ADDED, leaf("event-trait", "starts_with", "X", "name")),
    ),
    ('!match(event, "X*")', group("and", leaf("event", "not_starts_with", "X"))),
    ('match(event, "*X")', group("and", leaf("event", "ends_with", "X"))),
    (
        'event = "Product Added" and !match(properties.name, "*X")',
        group("and", ADDED, leaf("event-property", "not_ends_with", "X", "name")),
    ),
    (
        'event = "Product Added" and properties.name != null',
        group("and", ADDED, leaf("event-property", "exists", name="name")),
    ),
    (
        'event = "Product Added" and traits.name = null',
        group("and", ADDED, leaf("event-trait", "not_exists", name="name")),
    ),
]


@pytest.mark.parametrize(("text", "tree"), SEGMENT_TREES)
def test_segments_published_triggers_parse_to_segments_trees(text: str, tree: Any) -> None:
    assert parse_condition(text).ast() == tree


@pytest.mark.parametrize(
    ("text", "matching", "not_matching"),
    [
        # validate.test.ts, operator by operator (value under properties.value)
        ("properties.value = true", [True], [False, "true"]),
        ("properties.value = false", [False], [True, "false"]),
        ('properties.value = "x"', ["x"], ["y"]),
        ('properties.value = "123"', ["123"], [123, 0]),
        ("properties.value = 123", [123, 123.0], ["123", 0]),
        ('properties.value != "x"', ["y"], ["x"]),
        ('properties.value != "123"', [123, 456, "456"], ["123"]),
        ("properties.value < 10", [5], ["5", 10, "10"]),
        ("properties.value <= 10", [5, 10], ["5", "10", 11, "11"]),
        ("properties.value > 10", [11], ["11", 10, "10", 5, "5"]),
        ("properties.value >= 10", [11, 10], ["11", "10", 5, "5"]),
        ('contains(properties.value, "b")', ["abc"], ["xyz"]),
        ('!contains(properties.value, "b")', ["xyz"], ["abc"]),
        ('match(properties.value, "x*")', ["xabc"], ["abc"]),
        ('!match(properties.value, "x*")', ["abc"], ["xabc"]),
        ('match(properties.value, "*x")', ["abcx"], ["abc"]),
        ('!match(properties.value, "*x")', ["abc"], ["abcx"]),
        ("properties.value != null", ["abcx"], [None]),
        ("properties.value = null", [None], ["abcx"]),
    ],
)
def test_segments_operators_match_as_in_validate(
    text: str, matching: list[Any], not_matching: list[Any]
) -> None:
    condition = parse_condition(text)
    assert [condition.matches({"properties": {"value": v}}) for v in matching] == [True] * len(
        matching
    )
    assert [condition.matches({"properties": {"value": v}}) for v in not_matching] == [False] * len(
        not_matching
    )


def test_a_missing_property_exists_or_not() -> None:
    # validate.test.ts, "operators - exists" / "not exists" on {properties: {}}
    assert not parse_condition("properties.value != null").matches({"properties": {}})
    assert parse_condition("properties.value = null").matches({"properties": {}})
    assert not parse_condition('properties.value = "x"').matches({})


@pytest.mark.parametrize(
    ("text", "matching", "not_matching"),
    [
        # validate.test.ts, the event type and event name cases
        ('type = "track"', [{"type": "track"}], [{"type": "identify"}]),
        (
            'type = "track" or type = "identify"',
            [{"type": "track"}, {"type": "identify"}],
            [{"type": "group"}],
        ),
        ('type != "group"', [{"type": "track"}, {"type": "identify"}], [{"type": "group"}]),
        ('event = "Page Viewed"', [{"event": "Page Viewed"}], [{"event": "Product Added"}]),
        (
            'event = "Page Viewed" or event = "Product Viewed"',
            [{"event": "Page Viewed"}, {"event": "Product Viewed"}],
            [{"event": "Product Added"}],
        ),
        # the issue's own example, and the fields beyond properties
        (
            'type = "track" and event = "Flow Started"',
            [{"type": "track", "event": "Flow Started"}],
            [{"type": "page", "event": "Flow Started"}, {"type": "track", "event": "Flow Ended"}],
        ),
        ('userId = "u1"', [{"userId": "u1"}], [{"userId": "u2"}, {}]),
        ('context.page.path = "/x"', [{"context": {"page": {"path": "/x"}}}], [{"context": {}}]),
        ("traits.age >= 18", [{"traits": {"age": 18}}], [{"traits": {"age": "18"}}, {}]),
        ('properties.items.0.sku = "a"', [{"properties": {"items": [{"sku": "a"}]}}], [{}]),
        (
            'properties.product\\ 1.price = "2"',
            [{"properties": {"product 1": {"price": "2"}}}],
            [{}],
        ),
    ],
)
def test_fields_and_groups_match(text: str, matching: list[Any], not_matching: list[Any]) -> None:
    condition = parse_condition(text)
    assert [condition.matches(m) for m in matching] == [True] * len(matching)
    assert [condition.matches(m) for m in not_matching] == [False] * len(not_matching)


def test_parentheses_nest() -> None:
    # Segment's parser stops a group at the first ")"; these nest to any depth
    condition = parse_condition(
        'type = "track" and ((event = "A" or event = "B") or (properties.x > 1 and userId != null))'
    )
    assert condition.matches({"type": "track", "event": "B"})
    assert condition.matches({"type": "track", "properties": {"x": 2}, "userId": "u"})
    assert not condition.matches({"type": "track", "properties": {"x": 2}})
    assert not condition.matches({"type": "page", "event": "A"})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # fql.test.ts's invalid cases (Segment: a TypeError, or "Value token is missing")
        ("typo", "unknown field 'typo'"),
        ("type", "expected an operator (=, !=, <, <=, >, >=), found the end at character 5"),
        ('type * "32456"', "unexpected '*' at character 6"),
        ("", "a trigger needs a condition at character 1"),
        # Segment reads `type = ` as type = "eos"; refused here
        ("type = ", "expected a value after =, found the end at character 8"),
        # Segment keeps the last of and/or for the whole line; refused here
        (
            'type = "track" and event = "A" or event = "B"',
            "mixing 'and' and 'or' needs parentheses at character 32",
        ),
        ('evnt = "x"', "unknown field 'evnt' (a trigger tests type, event, name, userId"),
        ('properties = "x"', "unknown field 'properties'"),
        ('properties.total > "a lot"', "> compares with a number at character 20"),
        ('match(event, "X")', 'match() takes "prefix*" or "*suffix" at character 14'),
        ('contains(type, "x")', "contains() tests event, name, userId or a nested field"),
        ("event = 'x'", "strings take double quotes at character 9"),
        ('event = "x', "unterminated string at character 9"),
        ('(event = "x"', "expected ')', found the end at character 13"),
        ('event = "x")', "unexpected ')' at character 12"),
        ('properties.items[0] = "x"', "[ ] is not supported in a field path"),
        ('!event = "x"', "! goes before contains() or match() at character 1"),
        ('event = "x" and', "expected a condition, found the end at character 16"),
        (
            "(" * 33 + 'event = "x"' + ")" * 33,
            "parentheses nested more than 32 deep at character 33",
        ),
    ],
)
def test_bad_triggers_are_refused_naming_the_character(text: str, error: str) -> None:
    with pytest.raises(InvalidMapping) as refused:
        parse_condition(text, where="inbound.trigger")
    [problem] = refused.value.problems
    assert problem.where == "inbound.trigger"
    assert error in problem.reason


def test_a_message_that_is_not_an_object_matches_nothing() -> None:
    # validate.test.ts, "should handle undefined event" / "empty string as event"
    condition = parse_condition('properties.value = "x"')
    assert not condition.matches(None)
    assert not condition.matches("")
