"""The one call an intake makes for a batch of messages under a plan: the verdicts, with the
originals to quarantine kept and every violation counted in the caller's transaction, so that
a message is never stored or sent without its quarantined original, nor the reverse."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from integration.plans import quarantine, violations
from integration.plans.check import Plan, Verdict, check


@dataclass(frozen=True, slots=True)
class Judged:
    verdicts: list[Verdict]  # parallel to the messages judged
    # The messageIds kept in quarantine by this call; a held message whose id is not here was
    # quarantined before (or earlier in the same call): a redelivery, which changes nothing.
    quarantined: set[str] = field(default_factory=set)


async def judge(
    pg: asyncpg.Connection,
    plan: Plan | None,
    env_id: uuid.UUID,
    messages: Sequence[Mapping[str, Any]],
) -> Judged:
    """Verdicts parallel to `messages` (each a Segment message as a JSON object). Store or send
    `verdict.message` where it is not None; an answer to Segment stays 2xx for the others: they
    were received and kept. With no plan (`PlanCache.plan` gave None) every message passes as
    it is and nothing is written. Violations are counted per message received, Segment's
    redeliveries included; a messageId is quarantined once."""
    if plan is None:
        return Judged([Verdict(m, False, ()) for m in messages])
    verdicts = [check(m, plan) for m in messages]
    kept = await quarantine.keep(
        pg, env_id, plan.direction, list(zip(messages, verdicts, strict=True))
    )
    found = [v for verdict in verdicts for v in verdict.violations]
    await violations.record(pg, env_id, plan.direction, found)
    return Judged(verdicts, kept)
