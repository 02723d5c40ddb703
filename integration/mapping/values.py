"""JavaScript's value rules where mapping-kit's results depend on them.

Segment's mapping-kit runs on JavaScript values: a key that resolves to `undefined` vanishes
from the output while `null` stays, `String(x)` decides how a number reads in a template, and
"truthy" decides whether some options count. These helpers give Python's JSON values
(dict, list, str, int, float, bool, None) the same meaning, so a mapping written for
Segment maps a message the same way here.
"""

from __future__ import annotations

from typing import Final


class _Missing:
    """JavaScript's `undefined`: a value that is not there (a key that will be left out)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def type_name(value: object) -> str:
    """The type as mapping-kit's messages name it (`realTypeOf`)."""
    if value is MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_truthy(value: object) -> bool:
    """JavaScript truthiness: empty objects and arrays are true, 0 and "" are false."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, dict | list):
        return True
    return bool(value) and value == value  # NaN is falsy


def is_falsy_scalar(value: object) -> bool:
    """`x && x[key]` stops at these: undefined, null, false, 0, NaN and ""."""
    if value is MISSING or value is None or value is False or value == "":
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0 or value != value
    return False


def loosely_blank(value: object) -> bool:
    """`value == ''` in JavaScript: true for "", 0, false and arrays that join to ""."""
    if isinstance(value, str):
        return value == ""
    if isinstance(value, bool):
        return value is False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, list):
        return to_string(value) == ""
    return False


def to_string(value: object) -> str:
    """JavaScript's `String(value)`."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is MISSING:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_to_string(value)
    if isinstance(value, list):
        # Array.prototype.join: null and undefined items read as ""
        return ",".join("" if v is None or v is MISSING else to_string(v) for v in value)
    return "[object Object]"


def _number_to_string(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    # Python writes 1e-05 where JavaScript writes 0.00001 (plain digits down to 1e-6) and
    # 1.5e-07 where it writes 1.5e-7.
    mantissa, exponent = text.split("e")
    power = int(exponent)
    if -7 < power < 0:
        sign = "-" if mantissa.startswith("-") else ""
        digits = mantissa.lstrip("-").replace(".", "")
        return f"{sign}0.{'0' * (-power - 1)}{digits}"
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"
