"""The words of a trigger, as Segment's FQL lexer (@segment/fql-ts) cuts them.

`type = "track" and contains(properties.plan, "pro")` becomes a field, an operator, a string,
a conjunction, ... each with the character it starts at, so that an error can point there.
Field paths are read here whole (`properties.product\\ 1.price`, a backslash escaping any
character); FQL's `[0]` indexing is not accepted (write `properties.items.0`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from integration.mapping.errors import InvalidMapping, Problem

KEYWORDS: Final = {"and", "or", "null", "true", "false"}
_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_\-]")
_TERMINATORS: Final = " \t\r\n,)"


@dataclass(frozen=True)
class Token:
    kind: str  # field, string, number, op, not, and, or, null, true, false, (, ), ",", end
    text: str
    at: int  # the character it starts at, counted from 1
    segments: tuple[str, ...] = ()  # a field's path, escapes resolved


class _Lexer:
    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        self.i = 0

    def fail(self, message: str, at: int) -> InvalidMapping:
        return InvalidMapping([Problem(self.where, f"{message} at character {at + 1}")])

    def tokens(self) -> list[Token]:
        out = []
        while (token := self.next()).kind != "end":
            out.append(token)
        out.append(token)
        return out

    def next(self) -> Token:
        src = self.source
        while self.i < len(src) and src[self.i] in " \t\r\n":
            self.i += 1
        start = self.i
        if start >= len(src):
            return Token("end", "", start + 1)
        char = src[start]
        if char in "(),":
            self.i += 1
            return Token(char, char, start + 1)
        if char in "=!<>":
            return self.operator(start)
        if char == '"':
            return self.string(start)
        if char == "'":
            raise self.fail("strings take double quotes", start)
        if _NUMBER.match(src, start):
            return self.number(start)
        if _IDENT_CHAR.match(char) or char == "\\":
            return self.field(start)
        if char == "[":
            raise self.fail(
                "[ ] is not supported in a field path (write properties.items.0)", start
            )
        raise self.fail(f"unexpected {char!r}", start)

    def operator(self, start: int) -> Token:
        two = self.source[start : start + 2]
        if two in ("!=", "<=", ">="):
            self.i += 2
            return Token("op", two, start + 1)
        self.i += 1
        char = self.source[start]
        return Token("not" if char == "!" else "op", char, start + 1)

    def string(self, start: int) -> Token:
        close = self.source.find('"', start + 1)
        if close < 0:
            raise self.fail("unterminated string", start)
        self.i = close + 1
        return Token("string", self.source[start + 1 : close], start + 1)

    def number(self, start: int) -> Token:
        match = _NUMBER.match(self.source, start)
        assert match is not None
        self.i = match.end()
        self.expect_terminator("number", start)
        return Token("number", match.group(0), start + 1)

    def field(self, start: int) -> Token:
        src = self.source
        segments: list[str] = []
        current: list[str] = []
        while self.i < len(src):
            char = src[self.i]
            if char == "\\":
                if self.i + 1 >= len(src):
                    raise self.fail("nothing after the escape \\", self.i)
                current.append(src[self.i + 1])
                self.i += 2
            elif _IDENT_CHAR.match(char):
                current.append(char)
                self.i += 1
            elif char == "." and current:
                segments.append("".join(current))
                current = []
                self.i += 1
            else:
                break
        if not current:
            raise self.fail("a field path has an empty segment", self.i - 1)
        segments.append("".join(current))
        text = src[start : self.i]
        if len(segments) == 1 and text in KEYWORDS:
            return Token(text, text, start + 1)
        return Token("field", text, start + 1, tuple(segments))

    def expect_terminator(self, what: str, start: int) -> None:
        if self.i < len(self.source) and self.source[self.i] not in _TERMINATORS + "=!<>":
            raise self.fail(f"unexpected {self.source[self.i]!r} after a {what}", self.i)


def lex(source: str, where: str) -> list[Token]:
    """The tokens of a trigger, ending with an `end` token; InvalidMapping if it cannot be cut."""
    return _Lexer(source, where).tokens()
