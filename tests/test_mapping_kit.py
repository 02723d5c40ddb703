"""The mapping library (integration/mapping) against Segment's own examples.

Most cases are Segment's published examples, directive by directive, from
segmentio/action-destinations: packages/core/src/mapping-kit/README.md ("README" below),
packages/core/src/mapping-kit/__tests__/index.iso.test.ts ("index.iso.test.ts"),
__tests__/placeholders.test.ts, __tests__/flatten.test.ts and schema-fixtures/ (valid and
invalid mappings for validate.test.ts). A mapping that Segment would map must map the same
way here; the cases after them cover where this library is stricter (it refuses at
compile time what Segment only finds on a message) and how errors name their place.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration.mapping import (
    SUPPORTED_DIRECTIVES,
    InvalidMapping,
    MappingFailed,
    compile_mapping,
)


def transform(mapping: Any, payload: Any = None) -> Any:
    return compile_mapping(mapping).apply({} if payload is None else payload)


def problems(mapping: Any) -> list[str]:
    with pytest.raises(InvalidMapping) as refused:
        compile_mapping(mapping)
    return [str(p) for p in refused.value.problems]


# --- README: the opening example and "Mixing raw values and directives" ----------------------


def test_readme_opening_example() -> None:
    # README, the first example
    mapping = {
        "name": "Mr. Rogers",
        "neighborhood": {"@path": "$.properties.neighborhood"},
        "greeting": {"@template": "Won't you be my {{properties.noun}}?"},
    }
    payload = {
        "type": "track",
        "event": "Sweater On",
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"}},
        "properties": {"neighborhood": "Latrobe", "noun": "neighbor", "sweaterColor": "red"},
    }
    assert transform(mapping, payload) == {
        "name": "Mr. Rogers",
        "neighborhood": "Latrobe",
        "greeting": "Won't you be my neighbor?",
    }


def test_readme_mixing_raw_values_and_directives() -> None:
    # README, "Mixing raw values and directives"
    traits = {
        "name": "Peter Gibbons",
        "email": "peter@example.com",
        "plan": "premium",
        "logins": 5,
        "address": {"street": "6th St", "city": "San Francisco", "state": "CA"},
    }
    mapping = {
        "action": "create",
        "userId": {"@path": "$.traits.email"},
        "userProperties": {"@path": "$.traits"},
    }
    assert transform(mapping, {"traits": traits}) == {
        "action": "create",
        "userId": "peter@example.com",
        "userProperties": traits,
    }


def test_readme_removing_values_from_object() -> None:
    # README, "Removing values from object": undefined goes, null stays
    mapping = {"foo": {"@path": "$.a"}, "bar": {"@path": "$.b"}, "baz": None}
    assert transform(mapping, {"a": 1}) == {"foo": 1, "baz": None}


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        # index.iso.test.ts, "no-op" and "remove undefined values in objects"
        ({}, {}),
        ({"cool": True}, {"cool": True}),
        ({"x": None}, {"x": None}),
        ({"x": {}}, {"x": {}}),
        ({"x": {"y": {"z": {"@path": "$.nope"}}}, "foo": 1}, {"x": {"y": {}}, "foo": 1}),
        # schema-fixtures/valid: raw values
        ([1, 2], [1, 2]),
        ("foo", "foo"),
        ({"hello": {"world!": True}}, {"hello": {"world!": True}}),
    ],
)
def test_raw_values_pass_through(mapping: Any, expected: Any) -> None:
    assert transform(mapping, {"cool": False}) == expected


# --- @if ------------------------------------------------------------------------------------


IF_PAYLOAD = {"a": 1, "b": True, "c": False, "d": None, "e": ""}


@pytest.mark.parametrize(
    ("test", "path", "expected"),
    [
        # index.iso.test.ts, "@if" exists
        ("exists", "$.a", 1),
        ("exists", "$.d", 2),
        ("exists", "$.x", 2),
        ("exists", "$.e", 1),
        # index.iso.test.ts, "@if" blank
        ("blank", "$.a", 1),
        ("blank", "$.d", 2),
        ("blank", "$.x", 2),
        ("blank", "$.e", 2),
        # README, "@if": false is loosely "" in JavaScript, so it is blank
        ("blank", "$.c", 2),
    ],
)
def test_if_exists_and_blank(test: str, path: str, expected: int) -> None:
    mapping = {"@if": {test: {"@path": path}, "then": 1, "else": 2}}
    assert transform(mapping, IF_PAYLOAD) == expected


def test_if_readme_examples() -> None:
    # README, "@if"
    payload = {"a": "cool", "b": True}
    yep = {"@if": {"exists": {"@path": "$.a"}, "then": "yep", "else": "nope"}}
    nope = {"@if": {"exists": {"@path": "$.nope"}, "then": "yep", "else": "nope"}}
    blank = {"@if": {"blank": {"@path": "$.c"}, "then": "yep", "else": "nope"}}
    assert [transform(m, payload) for m in (yep, nope, blank)] == ["yep", "nope", "nope"]
    # README: a branch that is not there leaves the field out
    only_then = {"foo-exists": {"@if": {"exists": {"@path": "$.foo"}, "then": True}}}
    assert transform(only_then, {"a": "cool"}) == {}
    assert (
        transform(
            {"a": {"@if": {"exists": {"@path": "$.oops"}, "then": {"@path": "$.a"}}}}, payload
        )
        == {}
    )


def test_if_else_counts_only_when_truthy_as_in_mapping_kit() -> None:
    # index.ts: `!condition && opts.else`, so "else": false / 0 / "" / null give nothing
    for falsy in (False, 0, "", None):
        assert (
            transform({"x": {"@if": {"exists": {"@path": "$.no"}, "then": 1, "else": falsy}}}) == {}
        )
    assert transform({"x": {"@if": {"exists": {"@path": "$.no"}, "else": []}}}) == {"x": []}


# --- @path ----------------------------------------------------------------------------------


PATH_PAYLOAD = {"foo": {"bar": 42, "baz": [{"num": 1}, {"num": 2}]}, "hello": "world"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # README, "@path"
        ("$.hello", "world"),
        ("$.foo.bar", 42),
        ("$.foo.baz[0].num", 1),
        # README: the leading $. may be left out
        ("foo.baz[1].num", 2),
        ("foo.baz.1.num", 2),
        ("foo['bar']", 42),
    ],
)
def test_path_readme_examples(path: str, expected: Any) -> None:
    assert transform({"@path": path}, PATH_PAYLOAD) == expected


def test_path_index_tests() -> None:
    # index.iso.test.ts, "@path"
    assert transform({"neat": {"@path": "$.foo"}}, {"foo": "bar"}) == {"neat": "bar"}
    obj = {"foo": "bar"}
    assert transform({"@path": ""}, obj) == obj
    assert transform({"@path": "$."}, obj) == obj
    assert transform({"neat": {"@path": "$.foo.bar"}}, {"foo": {"bar": "baz"}}) == {"neat": "baz"}
    assert transform({"@path": {"@path": "$.foo"}}, {"foo": "bar", "bar": "baz"}) == "baz"
    assert transform({"neat": {"@path": "$.oops"}}, {"foo": "bar"}) == {}
    spaced = {"integrations": {"Actions Amplitude": {"session_id": "bar"}}}
    assert transform(
        {"neat": {"@path": "$.integrations.Actions Amplitude.session_id"}}, spaced
    ) == {"neat": "bar"}
    assert transform({"neat": {"@path": "$.foo.bar.baz"}}, {"foo": "bar"}) == {}


def test_path_stops_at_a_falsy_value_and_yields_it_as_javascript_does() -> None:
    # get.ts: `prevObj && prevObj[key]`: a null on the way is the answer, not undefined
    assert transform({"x": {"@path": "$.a.b"}}, {"a": None}) == {"x": None}
    assert transform({"x": {"@path": "$.a.b"}}, {"a": 0}) == {"x": 0}
    assert transform({"x": {"@path": "$.a.b"}}, {"a": {}}) == {}


def test_path_that_a_directive_computes_must_be_text() -> None:
    # index.ts, registerStringDirective: "@path: expected string, got number"
    mapping = compile_mapping({"props": {"x": {"@path": {"@path": "$.which"}}}})
    assert mapping.apply({"which": "a", "a": 1}) == {"props": {"x": 1}}
    with pytest.raises(MappingFailed) as failed:
        mapping.apply({"which": 7})
    assert failed.value.where == "mapping.props.x.@path"
    assert str(failed.value) == "mapping.props.x.@path: @path: expected string, got number"


# --- @template ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # README, "@template" (its third line shows "Mr.Rogers"; the space is kept)
        ("Hello, {{traits.name}}!", "Hello, Mr. Rogers!"),
        ("Hello, {{traits.fullName}}!", "Hello, !"),
        ("{{traits.name}} ({{userId}})", "Mr. Rogers (abc123)"),
        ("no braces at all", "no braces at all"),
        ("{{ userId }}", "abc123"),
    ],
)
def test_template_readme_examples(template: str, expected: str) -> None:
    payload = {"traits": {"name": "Mr. Rogers"}, "userId": "abc123"}
    assert transform({"@template": template}, payload) == expected


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        # index.iso.test.ts, "@template"
        ("Hello, {{who}}!", {"who": "World"}, "Hello, World!"),
        ("Hello, {{who.name}}!", {"who": {"name": "World"}}, "Hello, World!"),
        ("<blink>{{a}} {{{a}}}</blink>", {"a": "<b>Hi</b>"}, "<blink><b>Hi</b> <b>Hi</b></blink>"),
        ("{{oops.yo}}", {}, ""),
        # placeholders.test.ts: values as JavaScript's String() writes them
        ("{{foo}}", {"foo": True}, "true"),
        ("{{foo}}", {"foo": 1}, "1"),
        ("{{foo}}", {"foo": {"bar": "baz"}}, "[object Object]"),
        ("{{foo}}", {"foo": None}, ""),
        ("{{foo}}}", {"foo": "hello"}, "hello}"),
        ("Hello {{foo}} {{bar}}", {"foo": "Mr.", "bar": "Bean"}, "Hello Mr. Bean"),
        # and numbers as JavaScript writes them, lists joined with commas
        ("{{n}}", {"n": 2.0}, "2"),
        ("{{n}}", {"n": 0.00001}, "0.00001"),
        ("{{n}}", {"n": 1.5e-7}, "1.5e-7"),
        ("{{l}}", {"l": [1, None, "a"]}, "1,,a"),
    ],
)
def test_template_index_and_placeholder_tests(template: str, data: Any, expected: str) -> None:
    assert transform({"@template": template}, data) == expected


def test_template_from_a_directive() -> None:
    # schema-fixtures/valid/@template-nested.json, and @template-metadata.json's _metadata
    assert transform({"@template": {"@path": "$.t"}}, {"t": "Hi {{n}}", "n": "Al"}) == "Hi Al"
    with_metadata = {
        "@template": "{{foo.bar}}",
        "_metadata": {"type": "autocomplete", "label": "X"},
    }
    assert transform(with_metadata, {"foo": {"bar": "baz"}}) == "baz"


# --- @literal -------------------------------------------------------------------------------


def test_literal() -> None:
    # README, "@literal"; index.iso.test.ts, "@literal" (what it holds is resolved)
    assert transform({"@literal": True}) is True
    assert transform({"simple": {"@literal": False}}) == {"simple": False}
    nested = {"nested": {"@literal": {"a": {"@path": "$.a"}, "b": {"@path": "$.b"}}}}
    assert transform(nested, {"a": "some value"}) == {"nested": {"a": "some value"}}


# --- @arrayPath -----------------------------------------------------------------------------


PRODUCTS = {"products": [{"productId": "123", "price": 0.5}, {"productId": "456", "price": 0.99}]}
SHAPE = {"product_id": {"@path": "$.productId"}, "monies": {"@path": "$.price"}}
SHAPED = [{"product_id": "123", "monies": 0.5}, {"product_id": "456", "monies": 0.99}]


def test_array_path_readme_examples() -> None:
    # README, "@arrayPath"
    payload = {"properties": {"products": [{"productId": 1}, {"productId": 2}]}}
    assert transform({"@arrayPath": ["$.properties.products"]}, payload) == [
        {"productId": 1},
        {"productId": 2},
    ]
    shaped = {"@arrayPath": ["$.properties.products", {"some_other_key": {"@path": "$.productId"}}]}
    assert transform(shaped, payload) == [{"some_other_key": 1}, {"some_other_key": 2}]


def test_array_path_index_tests() -> None:
    # index.iso.test.ts, "@arrayPath"
    assert transform({"neat": {"@arrayPath": ["$.products"]}}, PRODUCTS) == {
        "neat": PRODUCTS["products"]
    }
    assert transform({"neat": {"@arrayPath": ["$.products", SHAPE]}}, PRODUCTS) == {"neat": SHAPED}
    computed = {
        "@if": {"exists": {"@path": "$.products"}, "then": {"@path": "$.products"}, "else": []}
    }
    assert transform({"neat": {"@arrayPath": [computed, SHAPE]}}, PRODUCTS) == {"neat": SHAPED}
    not_a_list = {"products": {"notAnArray": True}}
    assert transform({"neat": {"@arrayPath": ["$.products", SHAPE]}}, not_a_list) == {"neat": [{}]}
    single = {"properties": {"productId": "123", "price": 0.5}}
    assert transform({"neat": {"@arrayPath": ["$.properties", SHAPE]}}, single) == {
        "neat": [{"product_id": "123", "monies": 0.5}]
    }


# --- @case ----------------------------------------------------------------------------------


CASE_PAYLOAD = {
    "a": 1,
    "b": "MAKE ME LOWER CASE",
    "c": "make me upper case",
    "d": None,
    "e": "",
    "f": False,
    "g": "mIXeD StRinG CasING W/ NuMBErs 190wdB",
    "h": {"key1": "with values", "key2": ["hi", True, None]},
}


@pytest.mark.parametrize(
    ("operator", "path", "expected"),
    [
        # index.iso.test.ts, "@case"
        ("lower", "$.b", "make me lower case"),
        ("upper", "$.c", "MAKE ME UPPER CASE"),
        ("lower", "$.e", ""),
        ("lower", "$.g", "mixed string casing w/ numbers 190wdb"),
        ("upper", "$.g", "MIXED STRING CASING W/ NUMBERS 190WDB"),
        ("lower", "$.a", 1),
        ("lower", "$.d", None),
        ("lower", "$.f", False),
        ("lower", "$.h", CASE_PAYLOAD["h"]),
    ],
)
def test_case(operator: str, path: str, expected: Any) -> None:
    assert (
        transform({"@case": {"operator": operator, "value": {"@path": path}}}, CASE_PAYLOAD)
        == expected
    )


def test_case_readme_example() -> None:
    # README, "@case" (its result line reads "this is a string...": the input lowered is this)
    mapping = {"@case": {"operator": "lower", "value": {"@path": "$.properties.message"}}}
    payload = {"properties": {"message": "THIS STRING IS IN ALL CAPS"}}
    assert transform(mapping, payload) == "this string is in all caps"


def test_case_errors_are_refused_when_compiled() -> None:
    # index.iso.test.ts: these throw in Segment (on each message); here when compiled
    assert problems({"@case": {"wrongKey": "lower", "value": {"@path": "$.b"}}}) == [
        "mapping.@case.wrongKey: @case has no option 'wrongKey' (it takes operator, value)",
        "mapping.@case: @case needs 'operator'",
    ]
    assert problems({"@case": {"operator": "unsupported snake", "value": {"@path": "$.b"}}}) == [
        "mapping.@case.operator: should be one of lower, upper, not 'unsupported snake'"
    ]
    assert problems({"@case": "not an object"}) == [
        "mapping.@case: @case takes an object with operator, value"
    ]


# --- @replace -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "options", "expected"),
    [
        # README, "@replace"
        ("cool-story", {"pattern": "-", "replacement": ""}, "coolstory"),
        ("cool-story", {"pattern": "-", "replacement": "nice"}, "coolnicestory"),
        (
            "cWWl-story-ww",
            {"pattern": "WW", "replacement": "oo", "ignorecase": False},
            "cool-story-ww",
        ),
        ("just-the-first", {"pattern": "-", "replacement": "@", "global": False}, "just@the-first"),
        (
            "something-great!",
            {"pattern": "-", "replacement": " ", "pattern2": "great", "replacement2": "awesome"},
            "something awesome!",
        ),
        # index.iso.test.ts, "@replace"
        ("", {"pattern": "_", "replacement": "rrrrr"}, ""),
        (None, {"pattern": "_", "replacement": "rrrrr"}, ""),
        (
            "aab-----AaB---aab",
            {"pattern": "AaB", "replacement": "nice", "ignorecase": True},
            "nice-----nice---nice",
        ),
        (
            "nomore_underscore",
            {"pattern": "_", "replacement": "", "ignorecase": False},
            "nomoreunderscore",
        ),
        ("nomore_underscore", {"pattern": "_", "replacement": "weird"}, "nomoreweirdunderscore"),
        ("Well Hello there LOL", {"pattern": "LOL", "replacement": "YAY"}, "Well Hello there YAY"),
        (
            "many+different+things",
            {"pattern": "+", "replacement": "_", "global": True},
            "many_different_things",
        ),
        (
            "many+different+things",
            {"pattern": "+", "replacement": "_", "global": False},
            "many_different+things",
        ),
        ("aaabbbcccd", {"pattern": "aaabbbcccd", "replacement": ""}, ""),
        ("many+different+things", {"pattern": "many+"}, "different+things"),
        (True, {"pattern": "true", "replacement": "granted"}, "granted"),
        (1, {"pattern": "1", "replacement": "granted"}, "granted"),
        (
            False,
            {
                "pattern": "true",
                "replacement": "granted",
                "pattern2": "false",
                "replacement2": "denied",
            },
            "denied",
        ),
        # JavaScript's replacement syntax: $& is the match
        ("a.b", {"pattern": ".", "replacement": "[$&]"}, "a[.]b"),
    ],
)
def test_replace(value: Any, options: dict[str, Any], expected: str) -> None:
    mapping = {"@replace": {**options, "value": {"@path": "$.a"}}}
    assert transform(mapping, {"a": value}) == expected


# --- @json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "foo", "expected"),
    [
        # index.iso.test.ts, "@json"; README, "@json"
        ("encode", "bar", {"neat": '"bar"'}),
        ("encode", {"bar": "baz"}, {"neat": '{"bar":"baz"}'}),
        ("encode", ["bar", "baz"], {"neat": '["bar","baz"]'}),
        ("decode", '"bar"', {"neat": "bar"}),
        ("decode", '{"bar":"baz"}', {"neat": {"bar": "baz"}}),
        ("decode", '["bar","baz"]', {"neat": ["bar", "baz"]}),
        ("decode", "Hello World", {"neat": "Hello World"}),
        # a whole number as JavaScript writes it
        ("encode", {"n": 2.0, "m": 2.5}, {"neat": '{"n":2,"m":2.5}'}),
    ],
)
def test_json(mode: str, foo: Any, expected: Any) -> None:
    mapping = {"neat": {"@json": {"mode": mode, "value": {"@path": "$.foo"}}}}
    assert transform(mapping, {"foo": foo}) == expected


def test_json_of_nothing_is_nothing() -> None:
    # index.iso.test.ts, "@json" invalid value
    mapping = {"neat": {"@json": {"mode": "encode", "value": {"@path": "$.bad"}}}}
    assert transform(mapping, {"foo": {"bar": "baz"}}) == {}
    assert problems({"neat": {"@json": {"mode": "oops", "value": {"@path": "$.foo"}}}}) == [
        "mapping.neat.@json.mode: should be one of encode, decode, not 'oops'"
    ]


# --- @flatten -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("foo", "extra", "expected"),
    [
        # index.iso.test.ts, "@flatten"; README, "@flatten"
        ({"bar": "baz", "aces": {"a": 1, "b": 2}}, {}, {"bar": "baz", "aces.a": 1, "aces.b": 2}),
        ([{"fazz": "bar", "fizz": "baz"}], {}, {"0.fazz": "bar", "0.fizz": "baz"}),
        ({"bar": "baz", "aces": [1, 2]}, {"omitArrays": True}, {"bar": "baz", "aces": [1, 2]}),
        # flatten.test.ts
        ({"a": {"b": {"c": 1}, "d": 2}}, {"separator": "/"}, {"a/b/c": 1, "a/d": 2}),
        ({"a": [{"b": 1}, {"c": 2}]}, {}, {"a.0.b": 1, "a.1.c": 2}),
    ],
)
def test_flatten(foo: Any, extra: dict[str, Any], expected: Any) -> None:
    options = {"value": {"@path": "$.foo"}, "separator": ".", **extra}
    assert transform({"neat": {"@flatten": options}}, {"foo": foo}) == {"neat": expected}


# --- @merge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["left", "right"])
def test_merge_same_either_way(direction: str) -> None:
    # index.iso.test.ts, "@merge": empty, one object
    assert transform({"@merge": {"direction": direction, "objects": []}}) == {}
    assert transform({"@merge": {"direction": direction, "objects": [{"cool": True}]}}) == {
        "cool": True
    }
    assert problems({"@merge": {"direction": direction, "objects": {"oops": True}}}) == [
        "mapping.@merge.objects: should be an array of objects, not object"
    ]
    assert problems({"@merge": {"direction": direction, "objects": [{}, 1]}}) == [
        "mapping.@merge.objects[1]: should be an object or a directive, not number"
    ]


@pytest.mark.parametrize(
    ("direction", "objects", "expected"),
    [
        # index.iso.test.ts, "@merge"
        ("right", [{"cool": True}, {"cool": "you bet"}], {"cool": "you bet"}),
        ("right", [{"cool": True}, {"@path": "foo"}], {"cool": True, "bar": "baz"}),
        (
            "right",
            [{"cool": True, "hey": "there"}, {"@path": "foo"}],
            {"cool": True, "bar": "baz", "hey": "you"},
        ),
        ("left", [{"cool": True}, {"cool": "you bet"}], {"cool": True}),
        ("left", [{"cool": True}, {"@path": "foo"}], {"cool": True, "bar": "baz"}),
        (
            "left",
            [{"cool": True, "hey": "there"}, {"@path": "foo"}],
            {"cool": True, "bar": "baz", "hey": "there"},
        ),
    ],
)
def test_merge_directions(direction: str, objects: list[Any], expected: Any) -> None:
    payload = (
        {"foo": {"bar": "baz", "hey": "you"}} if len(objects[0]) == 2 else {"foo": {"bar": "baz"}}
    )
    assert transform({"@merge": {"direction": direction, "objects": objects}}, payload) == expected


def test_merge_readme_examples() -> None:
    # README, "@merge"
    payload = {
        "traits": {"name": "Mr. Rogers", "greeting": "Neighbor", "neighborhood": "Latrobe"},
        "properties": {"neighborhood": "Make Believe"},
    }
    right = {
        "@merge": {"objects": [{"@path": "traits"}, {"@path": "properties"}], "direction": "right"}
    }
    assert transform(right, payload)["neighborhood"] == "Make Believe"
    swapped = {
        "@merge": {"objects": [{"@path": "properties"}, {"@path": "traits"}], "direction": "right"}
    }
    assert transform(swapped, payload) == payload["traits"]
    defaults = {
        "@merge": {
            "objects": [
                {"name": "Missing name", "neighborhood": "Missing neighborhood"},
                {"@path": "traits"},
            ],
            "direction": "right",
        }
    }
    assert transform(defaults, {"traits": {"name": "Mr. Rogers"}}) == {
        "name": "Mr. Rogers",
        "neighborhood": "Missing neighborhood",
    }
    assert problems({"@merge": {"direction": "up", "objects": [{"oh": "yeah"}, {}]}}) == [
        "mapping.@merge.direction: should be one of left, right, not 'up'"
    ]


# --- @transform -----------------------------------------------------------------------------


NESTED_PROPERTIES = {
    "properties": {"test": "value", "another": "thing", "nested": {"a": "special", "b": 2}},
    "otherStuff": "foo",
    "more": "bar",
}
FLATTENED = {
    "properties": {"test": "value", "another": "thing", "nested_a": "special", "nested_b": 2},
    "topLevel": "special",
}


def test_transform() -> None:
    # README, "@transform"; index.iso.test.ts, "@transform"
    readme = {
        "@transform": {
            "apply": {"foo": {"@path": "$.a"}},
            "mapping": {"newValue": {"@path": "$.foo"}},
        }
    }
    assert transform(readme, {"a": 1, "b": 2}) == {"newValue": 1}
    composed = {
        "@transform": {
            "apply": {
                "properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}}
            },
            "mapping": {
                "properties": {"@path": "$.properties"},
                "topLevel": {"@path": "$.properties.nested_a"},
            },
        }
    }
    assert transform(composed, NESTED_PROPERTIES) == FLATTENED
    assert problems({"@transform": {"@path": {}}}) == [
        "mapping.@transform: @transform takes an object with apply, mapping"
    ]


def test_root_directive_key() -> None:
    # index.iso.test.ts, "when a root level directive is used"
    mapping = {
        "__segment_internal_directive": {
            "@transform": {
                "apply": {
                    "properties": {
                        "@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}
                    }
                }
            }
        },
        "properties": {"@path": "$.properties"},
        "topLevel": {"@path": "$.properties.nested_a"},
    }
    assert transform(mapping, NESTED_PROPERTIES) == FLATTENED


def test_transform_on_an_item_that_is_not_an_object_fails_naming_the_place() -> None:
    # index.ts: transform() throws "data must be an object" for such data
    inner = {"@transform": {"apply": {"v": {"@path": "$.x"}}, "mapping": {"w": {"@path": "$.v"}}}}
    mapping = compile_mapping({"items": {"@arrayPath": ["$.list", {"t": inner}]}})
    assert mapping.apply({"list": [{"x": 1}]}) == {"items": [{"t": {"w": 1}}]}
    with pytest.raises(MappingFailed) as failed:
        mapping.apply({"list": [{"x": 1}, 5]})
    assert failed.value.where == "mapping.items.@arrayPath[1].t.@transform"


# --- @excludeWhenNull -----------------------------------------------------------------------


def test_exclude_when_null_index_tests() -> None:
    # README, "@excludeWhenNull"; index.iso.test.ts, "@excludeWhenNull"
    readme = {
        "a": {"@excludeWhenNull": {"@path": "$.a"}},
        "b": {"@excludeWhenNull": {"@path": "$.b"}},
    }
    assert transform(readme, {"a": None, "b": "hello"}) == {"b": "hello"}
    payload = {"foo": {"bar": None, "aces": {"a": 1, "b": 2}}}
    assert transform({"x": {"@excludeWhenNull": {"@path": "$.foo.bar"}}}, payload) == {}
    assert transform(
        {
            "x": {"@excludeWhenNull": {"@path": "$.foo.bar"}},
            "anotherField": {"@path": "$.foo.aces.a"},
        },
        payload,
    ) == {"anotherField": 1}
    assert transform({"neat": {"@excludeWhenNull": {"@path": "$.foo"}}}, payload) == {
        "neat": {"aces": {"a": 1, "b": 2}}
    }
    deep = {"foo": {"bar": None, "aces": {"a": 1, "b": 2, "c": None, "d": {"a": None, "b": None}}}}
    assert transform({"neat": {"@excludeWhenNull": {"@path": "$.foo"}}}, deep) == {
        "neat": {"aces": {"a": 1, "b": 2, "d": {}}}
    }


def test_exclude_when_null_composed_with_other_directives() -> None:
    # index.iso.test.ts, "@excludeWhenNull" composed with other directives
    def exclude(directive: Any) -> Any:
        return {"@excludeWhenNull": directive}

    def tf(apply: Any, mapping: Any) -> Any:
        return {"@transform": {"apply": apply, "mapping": mapping}}

    massive = {
        "pathNull": exclude({"@path": "$.foo.bar"}),
        "templateEmpty": exclude({"@template": "{{foo.bar}}"}),
        "literalNull": exclude({"@literal": None}),
        "ifNull": exclude({"@if": {"exists": {"@path": "$.foo.foobar"}, "then": 1, "else": None}}),
        "caseNull": exclude({"@case": {"operator": "upper", "value": {"@path": "$.foo.bar"}}}),
        "replaceNull": exclude(
            {"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.foo.bar"}}}
        ),
        "jsonNull": exclude({"@json": {"mode": "decode", "value": {"@path": "$.foo.bar"}}}),
        "transformNull": exclude(
            tf(
                {"properties": {"@path": "$.foo.bar"}},
                {"properties": exclude({"@path": "$.properties"})},
            )
        ),
        "transformNull2": exclude(
            tf(
                {"properties": exclude({"@path": "$.foo.bar"})},
                {"properties": {"@path": "$.properties"}},
            )
        ),
        "transformValue": exclude(
            tf({"properties": {"@path": "$.foo"}}, {"properties": {"@path": "$.properties"}})
        ),
        "jsonNullEncode": exclude({"@json": {"mode": "encode", "value": {"@path": "$.foo.bar"}}}),
    }
    payload = {"foo": {"bar": None, "aces": {"a": 1, "b": 2}}}
    assert transform({"massive": massive}, payload) == {
        "massive": {
            "templateEmpty": "",
            "jsonNullEncode": "null",
            "replaceNull": "",
            "transformNull": {},
            "transformNull2": {},
            "transformValue": {"properties": {"aces": {"a": 1, "b": 2}}},
        }
    }
    empty = {
        "empty": tf(
            {"properties": exclude({"@path": "$.properties"})},
            {"properties": {"@path": "$.properties"}},
        )
    }
    assert transform(empty, payload) == {"empty": {}}


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mapping",
    [
        # schema-fixtures/valid/*.json
        {
            "@arrayPath": [
                "$.products",
                {"cash_money": {"@path": "$.price"}, "product_id": {"@path": "$.productId"}},
            ]
        },
        {"@arrayPath": ["$.foo.bar"]},
        {
            "@if": {
                "exists": {"@path": "$.foo"},
                "then": {"@path": "$.bar"},
                "else": {"@path": "$.baz"},
            }
        },
        {"@if": {"exists": 1, "else": 3}},
        {"@if": {"exists": 1, "then": 2, "else": 3}},
        {"@path": {"@path": "$.foo.bar"}},
        {"@path": "$.foo.bar"},
        {
            "@replace": {
                "pattern": "+",
                "replacement": "-",
                "value": {"@path": "$.a"},
                "ignorecase": True,
            }
        },
        {"@replace": {"pattern": "+", "value": {"@path": "$.a"}}},
        {"@replace": {"pattern": "+", "replacement": "-", "value": {"@path": "$.a"}}},
        {"@template": "{{foo.bar}}", "_metadata": {"type": "autocomplete", "label": "X"}},
        {"@template": {"@path": "$.my.template"}},
        {"@template": "{{foo.bar}}"},
        [1, 2],
        {"hello": {"world!": True}},
        {"cool": True, "string": "right here!"},
        "foo",
        # index.iso.test.ts, "validations" valid
        {"a": 1, "b": {"@path": "$.foo.bar"}},
        {"@literal": "123"},
        {"@literal": False},
    ],
)
def test_segments_valid_mappings_compile(mapping: Any) -> None:
    compile_mapping(mapping)


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        # schema-fixtures/invalid/*.json: Segment's message, then ours naming the same place
        (
            {"@arrayPath": "nope"},
            ["mapping.@arrayPath: @arrayPath takes [path] or [path, item shape]"],
        ),
        (
            {"@if": {"exists": True, "then": {"@oops": {}}}},
            ["mapping.@if.then.@oops: unknown directive @oops"],
        ),
        ({"@path": False}, ["mapping.@path: should be a string or a directive, not boolean"]),
        ({"@replace": {"value": {"@path": "$.a"}}}, ["mapping.@replace: @replace needs 'pattern'"]),
        ({"@replace": {"pattern": "bla"}}, ["mapping.@replace: @replace needs 'value'"]),
        (
            {"@replace": {"pattern": "waaaaayyytoooooloooong", "value": {"@path": "$.a"}}},
            ["mapping.@replace.pattern: should be 1 to 10 characters long, not 22"],
        ),
        (
            {
                "@replace": {
                    "pattern": "w",
                    "replacement": "waaaayyyytooolong",
                    "value": {"@path": "$.a"},
                }
            },
            ["mapping.@replace.replacement: should be 0 to 10 characters long, not 17"],
        ),
        (
            {
                "@replace": {
                    "pattern": "+",
                    "replacement": "-",
                    "value": {"@path": "$.a"},
                    "global": "bla",
                }
            },
            ["mapping.@replace.global: should be true or false, not 'bla'"],
        ),
        (
            {
                "@replace": {
                    "pattern": "+",
                    "replacement": "-",
                    "value": {"@path": "$.a"},
                    "ignorecase": "bla",
                }
            },
            ["mapping.@replace.ignorecase: should be true or false, not 'bla'"],
        ),
        ({"@template": 123}, ["mapping.@template: should be a string or a directive, not number"]),
        (
            {"@path": "$.foo", "bar": "baz"},
            ["mapping: mixes the directive @path with other keys (bar)"],
        ),
        (
            {"@path": "$.foo", "@bar": "baz"},
            ["mapping: has 2 directives (@path, @bar); one per object"],
        ),
        (
            {"obj": {"@path": "foo.bar", "oops": True}, "hash": {"@template": {}}},
            [
                "mapping.obj: mixes the directive @path with other keys (oops)",
                "mapping.hash.@template: should be a string or a directive, not object",
            ],
        ),
        ({"@oops": {}}, ["mapping.@oops: unknown directive @oops"]),
        # index.iso.test.ts, "validations" invalid
        (
            {"a": 1, "@field": "$.foo.bar"},
            ["mapping: mixes the directive @field with other keys (a)"],
        ),
        (
            {"oops": {"@merge": [{}, 123]}},
            ["mapping.oops.@merge: @merge takes an object with objects, direction"],
        ),
        (
            {"@template": False},
            ["mapping.@template: should be a string or a directive, not boolean"],
        ),
    ],
)
def test_segments_invalid_mappings_are_refused_naming_the_place(
    mapping: Any, expected: list[str]
) -> None:
    assert problems(mapping) == expected


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"properties": {"plan": {"@pth": "$.x"}}},
            "mapping.properties.plan.@pth: unknown directive @pth (did you mean @path?)",
        ),
        (
            {"x": {"@if": {"exist": {"@path": "$.a"}, "then": 1}}},
            "mapping.x.@if.exist: @if has no option 'exist' (it takes exists, blank, then, else)",
        ),
        ({"x": {"@if": {"exists": {"@path": "$.a"}}}}, "mapping.x.@if: @if needs 'then' or 'else'"),
        (
            {"x": {"@if": {"exists": 1, "blank": 1, "then": 1}}},
            "mapping.x.@if: @if needs exactly one of 'exists' or 'blank'",
        ),
        (
            {"x": {"@path": "properties..plan"}},
            "mapping.x.@path: path 'properties..plan' has an empty segment at character 12",
        ),
        (
            {"x": {"@path": "properties.plan."}},
            "mapping.x.@path: path 'properties.plan.' ends with a dot",
        ),
        (
            {"x": {"@path": "items[0"}},
            "mapping.x.@path: path 'items[0' has an unclosed [ at character 6",
        ),
        (
            {"x": {"@template": "Hi {{traits.name"}},
            "mapping.x.@template: template 'Hi {{traits.name' has {{ without a closing }}",
        ),
        (
            {"x": {"@liquid": "{{ a }}"}},
            "mapping.x.@liquid: @liquid (Liquid templates) is not supported; use @template or @if",
        ),
        (
            {"x": {"@flatten": {"value": {"@path": "$.a"}}}},
            "mapping.x.@flatten: @flatten needs 'separator'",
        ),
        ({"x": {"@merge": {"objects": []}}}, "mapping.x.@merge: @merge needs 'direction'"),
        (
            {"items": [1, {"@path": 2}]},
            "mapping.items[1].@path: should be a string or a directive, not number",
        ),
        (
            {"odd key": {"@path": 2}},
            'mapping["odd key"].@path: should be a string or a directive, not number',
        ),
    ],
)
def test_stricter_refusals_name_the_place(mapping: Any, expected: str) -> None:
    assert problems(mapping) == [expected]


def test_every_problem_is_reported_at_once() -> None:
    refused = problems(
        {"a": {"@pth": "x"}, "b": {"@case": {"operator": "snake"}}, "c": {"@path": "ok"}}
    )
    assert refused == [
        "mapping.a.@pth: unknown directive @pth (did you mean @path?)",
        "mapping.b.@case.operator: should be one of lower, upper, not 'snake'",
    ]


def test_a_message_that_is_not_an_object_fails() -> None:
    # index.iso.test.ts, "payload validations"
    mapping = compile_mapping({"a": 1})
    bad: object
    for bad in (123, []):
        with pytest.raises(MappingFailed, match="a message must be an object"):
            mapping.apply(bad)


def test_the_supported_directives_are_listed() -> None:
    assert set(SUPPORTED_DIRECTIVES) == {
        "@path", "@template", "@literal", "@if", "@case", "@replace", "@arrayPath",
        "@json", "@flatten", "@merge", "@transform", "@excludeWhenNull",
    }  # fmt: skip


def test_a_compiled_mapping_gives_each_message_its_own_output() -> None:
    mapping = compile_mapping(
        {"fixed": {"list": [1], "obj": {"k": "v"}}, "who": {"@path": "userId"}}
    )
    first = mapping.apply({"userId": "a"})
    assert isinstance(first, dict)
    first["fixed"]["list"].append(2)
    assert mapping.apply({"userId": "b"}) == {"fixed": {"list": [1], "obj": {"k": "v"}}, "who": "b"}


def test_nesting_is_bounded_when_compiled_and_when_applied() -> None:
    deep: Any = 1
    for _ in range(70):
        deep = {"a": deep}
    [refused] = problems({"x": deep})
    assert refused.endswith(": is nested more than 64 levels deep")
    message: Any = {}
    for _ in range(2_000):
        message = {"a": message}
    flatten = compile_mapping({"x": {"@flatten": {"value": {"@path": "$."}, "separator": "."}}})
    with pytest.raises(MappingFailed, match="nested too deeply"):
        flatten.apply(message)
