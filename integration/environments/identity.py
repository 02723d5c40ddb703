"""An environment's identity rules: which ids never identify or merge anyone, how many
anonymous ids one user may gather, and whether one identified user may be aliased into another.
Set per environment (`blocked_ids`, `max_anonymous_ids_per_user`, `allow_identified_merges`);
applied at ingest by integration/inbound/ingest.py (blocked ids) and identity.py (links and
merges)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from integration.errors import BadRequest

# The placeholders SDKs and buggy integrations send for "nobody": matched after trimming and
# case-folding, so " NULL " and "Undefined" are blocked too, and a blank id always is.
DEFAULT_BLOCKED_IDS = ("0", "-1", "null", "undefined", "anonymous", "none", "n/a", "")
DEFAULT_MAX_ANONYMOUS_IDS = 100
MAX_BLOCKED_IDS = 1000
MAX_ANONYMOUS_IDS_LIMIT = 1_000_000


def normalised(value: str) -> str:
    return value.strip().casefold()


@dataclass(frozen=True, slots=True)
class IdentityRules:
    blocked: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_BLOCKED_IDS))
    max_anonymous_ids: int = DEFAULT_MAX_ANONYMOUS_IDS
    allow_identified_merges: bool = False

    @classmethod
    def of(
        cls, blocked_ids: Iterable[str] | None, max_anonymous_ids: int, allow_merges: bool
    ) -> IdentityRules:
        """From an environment's columns; `blocked_ids` None means the default list."""
        listed = DEFAULT_BLOCKED_IDS if blocked_ids is None else blocked_ids
        # A blank id is never anyone's, whatever the list says.
        return cls(frozenset(normalised(v) for v in (*listed, "")), max_anonymous_ids, allow_merges)

    def blocks(self, value: str | None) -> bool:
        """Whether `value` is an id that must not identify or merge anyone."""
        return value is not None and normalised(value) in self.blocked


def check_blocked_ids(value: Any) -> list[str] | None:
    """A list of ids (null: back to the default list)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_BLOCKED_IDS
        or not all(isinstance(v, str) and len(v) <= 255 for v in value)
    ):
        raise BadRequest(
            f"blocked_ids must be a list of at most {MAX_BLOCKED_IDS} ids (each up to 255"
            " characters), or null for the default list",
            error="invalid_field",
            field="blocked_ids",
        )
    return sorted({normalised(v) for v in value})


def check_max_anonymous_ids(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        value = -1
    if not 1 <= value <= MAX_ANONYMOUS_IDS_LIMIT:
        raise BadRequest(
            f"max_anonymous_ids_per_user must be a whole number from 1 to"
            f" {MAX_ANONYMOUS_IDS_LIMIT}",
            error="invalid_field",
            field="max_anonymous_ids_per_user",
        )
    return int(value)


# An environment's rules until it sets any: the default list, the default limit, no merges of
# identified users.
DEFAULT_RULES = IdentityRules()
