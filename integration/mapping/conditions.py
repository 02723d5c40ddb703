"""Triggers: Segment's subscription conditions (FQL), parsed once and matched per message.

    type = "track" and (event = "Flow Started" or event = "Flow Ended")
    properties.total >= 100 and contains(traits.plan, "pro") and !match(userId, "test-*")

The parse gives the same tree as Segment's parse-fql (packages/destination-subscriptions),
and matching follows its validate.ts operator by operator. Where Segment's parser silently
reads something else, this one refuses it and names the character: a field it does not
know, `and` mixed with `or` without parentheses (Segment keeps whichever comes last), a
missing value, a `match()` pattern without a `*` at one end, a single-quoted string, an
ordering (`<`, `>=`, ...) against something that is not a number. Parentheses nest to any
depth (Segment's stop at the first `)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeGuard

from integration.mapping import paths
from integration.mapping.errors import InvalidMapping, Problem
from integration.mapping.fql_lexer import Token, lex
from integration.mapping.values import MISSING, to_string

Scalar = str | int | float | bool
Test = Callable[[dict[str, object]], bool]

# A message's top-level fields a trigger can test, and the nested ones (with a path).
TOP_LEVEL: Final = {"type": "event-type", "event": "event", "name": "name", "userId": "userId"}
NESTED: Final = {
    "properties": "event-property",
    "traits": "event-trait",
    "context": "event-context",
}
# Parentheses deeper than this are refused (each level is a few frames of the parser).
MAX_NESTING: Final = 32
# contains() and match() take any field but `type`, as in Segment.
FUNCTION_FIELDS: Final = ("event", "name", "userId")


@dataclass(frozen=True)
class Leaf:
    type: str
    operator: str
    name: str | None = None  # the path under properties / traits / context
    value: Scalar | None = None

    def ast(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type, "operator": self.operator}
        if self.name is not None:
            out["name"] = self.name
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class Group:
    operator: str  # and | or
    children: tuple[Leaf | Group, ...] = field(default_factory=tuple)

    def ast(self) -> dict[str, object]:
        return {
            "type": "group",
            "operator": self.operator,
            "children": [c.ast() for c in self.children],
        }


class Condition:
    """A parsed trigger. `matches(message)` says whether a message is one it selects."""

    __slots__ = ("_test", "text", "tree")

    def __init__(self, text: str, tree: Group) -> None:
        self.text = text
        self.tree = tree
        self._test = _compile(tree)

    def matches(self, message: object) -> bool:
        return type(message) is dict and self._test(message)

    def ast(self) -> dict[str, object]:
        """The tree in the shape Segment's parseFql returns."""
        return self.tree.ast()


def parse_condition(text: str, *, where: str = "trigger") -> Condition:
    """Parse a trigger; InvalidMapping (naming the character) if it does not parse."""
    tree = _Parser(lex(text, where), where).parse()
    return Condition(text, tree)


class _Parser:
    def __init__(self, tokens: list[Token], where: str) -> None:
        self.tokens = tokens
        self.where = where
        self.i = 0
        self.nesting = 0

    def fail(self, message: str, token: Token) -> InvalidMapping:
        return InvalidMapping([Problem(self.where, f"{message} at character {token.at}")])

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def expect(self, kind: str, what: str) -> Token:
        token = self.take()
        if token.kind != kind:
            raise self.fail(f"expected {what}, found {_describe(token)}", token)
        return token

    def parse(self) -> Group:
        if self.peek().kind == "end":
            raise self.fail("a trigger needs a condition", self.peek())
        node = self.group()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {_describe(self.peek())}", self.peek())
        return node if isinstance(node, Group) else Group("and", (node,))

    def group(self) -> Leaf | Group:
        nodes = [self.term()]
        joiner: str | None = None
        while self.peek().kind in ("and", "or"):
            token = self.take()
            if joiner is not None and token.kind != joiner:
                raise self.fail("mixing 'and' and 'or' needs parentheses", token)
            joiner = token.kind
            nodes.append(self.term())
        # One condition alone stays itself, as in Segment's tree.
        return nodes[0] if len(nodes) == 1 else Group(joiner or "and", tuple(nodes))

    def term(self) -> Leaf | Group:
        token = self.take()
        if token.kind == "(":
            self.nesting += 1
            if self.nesting > MAX_NESTING:
                raise self.fail(f"parentheses nested more than {MAX_NESTING} deep", token)
            node = self.group()
            self.expect(")", "')'")
            self.nesting -= 1
            return node
        if token.kind == "not":
            name = self.peek()
            if name.kind != "field" or name.text not in ("contains", "match"):
                raise self.fail("! goes before contains() or match()", token)
            return self.function(self.take(), negate=True)
        if token.kind == "field":
            if token.text in ("contains", "match") and self.peek().kind == "(":
                return self.function(token, negate=False)
            return self.comparison(token)
        raise self.fail(f"expected a condition, found {_describe(token)}", token)

    def subject(self, token: Token) -> tuple[str, str | None]:
        """The Segment condition type and, for nested fields, the path under it."""
        head, *rest = token.segments
        if head in TOP_LEVEL and not rest:
            return TOP_LEVEL[head], None
        if head in NESTED and rest:
            return NESTED[head], ".".join(rest)
        known = ", ".join([*TOP_LEVEL, *(f"{n}.…" for n in NESTED)])
        raise self.fail(f"unknown field {token.text!r} (a trigger tests {known})", token)

    def comparison(self, token: Token) -> Leaf:
        kind, name = self.subject(token)
        operator = self.expect("op", "an operator (=, !=, <, <=, >, >=)")
        value = self.take()
        if value.kind not in ("string", "number", "true", "false", "null"):
            raise self.fail(
                f"expected a value after {operator.text}, found {_describe(value)}", value
            )
        if operator.text in ("<", "<=", ">", ">=") and value.kind != "number":
            raise self.fail(f"{operator.text} compares with a number", value)
        tested, expected = _operator(kind, operator.text, value)
        return Leaf(kind, tested, name, expected)

    def function(self, token: Token, *, negate: bool) -> Leaf:
        self.expect("(", f"'(' after {token.text}")
        subject = self.expect("field", f"a field inside {token.text}()")
        kind, name = self.subject(subject)
        if kind == "event-type":
            raise self.fail(f"{token.text}() tests event, name, userId or a nested field", subject)
        self.expect(",", "','")
        argument = self.expect("string", f"a string as {token.text}()'s 2nd argument")
        self.expect(")", "')'")
        prefix = "not_" if negate else ""
        if token.text == "contains":
            return Leaf(kind, f"{prefix}contains", name, argument.text)
        pattern = argument.text
        if pattern.endswith("*") and not pattern.startswith("*"):
            return Leaf(kind, f"{prefix}starts_with", name, pattern[:-1])
        if pattern.startswith("*") and not pattern.endswith("*"):
            return Leaf(kind, f"{prefix}ends_with", name, pattern[1:])
        raise self.fail('match() takes "prefix*" or "*suffix"', argument)


def _operator(kind: str, operator: str, token: Token) -> tuple[str, Scalar | None]:
    """Segment's reading of `field operator value` (parse-fql.ts): `!= null` is exists,
    `= true` is_true, `= 5` number_equals, ... depending on the field."""
    value = _value(token)
    typed = kind in NESTED.values()
    special = {
        ("!=", "null"): "exists",
        ("=", "null"): "not_exists",
        ("=", "true"): "is_true",
        ("=", "false"): "is_false",
        ("=", "number"): "number_equals",
        ("!=", "number"): "number_not_equals",
    }.get((operator, token.kind))
    allowed = {
        "event-type": (),
        "event": (),
        "name": ("exists", "not_exists"),
        "userId": ("exists", "not_exists", "is_true", "is_false"),
    }.get(kind)
    if special and (typed or (allowed is not None and special in allowed)):
        return special, value if special.startswith("number") else None
    # type and event compare with the value as text, whatever it was (Segment's String()).
    return operator, value if typed else to_string(value)


def _value(token: Token) -> Scalar:
    if token.kind == "string":
        return token.text
    if token.kind == "number":
        number = float(token.text)
        return int(number) if number.is_integer() else number
    if token.kind in ("true", "false"):
        return token.kind == "true"
    return "null"


def _describe(token: Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


# --- matching -----------------------------------------------------------------------------------


def _compile(node: Leaf | Group) -> Test:
    if isinstance(node, Group):
        tests = [_compile(c) for c in node.children]
        # Plain loops: all() / any() over a generator take twice as long per message.
        if node.operator == "and":

            def every(message: dict[str, object]) -> bool:
                for test in tests:  # noqa: SIM110
                    if not test(message):
                        return False
                return True

            return every

        def some(message: dict[str, object]) -> bool:
            for test in tests:  # noqa: SIM110
                if test(message):
                    return True
            return False

        return some
    return _leaf(node)


def _leaf(leaf: Leaf) -> Test:
    check = _check(leaf.operator, leaf.value)
    if leaf.name is None:
        key = {v: k for k, v in TOP_LEVEL.items()}[leaf.type]
        return lambda message: check(message.get(key, MISSING))
    container = {v: k for k, v in NESTED.items()}[leaf.type]
    keys = paths.parse(leaf.name)
    return lambda message: check(paths.get(message.get(container, MISSING), keys))


def _check(operator: str, expected: Scalar | None) -> Callable[[object], bool]:
    """validate.ts's validateValue: one operator, the expected value bound."""
    text = to_string(expected)
    number = float(expected) if isinstance(expected, int | float) else float("nan")
    checks: dict[str, Callable[[object], bool]] = {
        "=": lambda a: type(a) is str and a == text,
        "!=": lambda a: not (type(a) is str and a == text),
        "number_equals": lambda a: _is_number(a) and a == number,
        "number_not_equals": lambda a: _is_number(a) and a != number,
        "<": lambda a: _is_number(a) and a < number,
        "<=": lambda a: _is_number(a) and a <= number,
        ">": lambda a: _is_number(a) and a > number,
        ">=": lambda a: _is_number(a) and a >= number,
        "contains": lambda a: type(a) is str and text in a,
        "not_contains": lambda a: type(a) is str and text not in a,
        "starts_with": lambda a: type(a) is str and a.startswith(text),
        "not_starts_with": lambda a: type(a) is str and not a.startswith(text),
        "ends_with": lambda a: type(a) is str and a.endswith(text),
        "not_ends_with": lambda a: type(a) is str and not a.endswith(text),
        "exists": lambda a: a is not MISSING and a is not None,
        "not_exists": lambda a: a is MISSING or a is None,
        "is_true": lambda a: a is True,
        "is_false": lambda a: a is False,
    }
    return checks[operator]


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
