"""What issue #25's identity guards cost batch ingest: identify/alias-heavy batches (30% identify,
5% alias, the rest track) through `ingest.store`, as the webhook's group commit calls it, against
the same store with the path from before #25 swapped in, in one run, interleaved.

    python -m bench.identity_cost [--batches 80] [--size 500] [--shared-database]

Guarded is today's code: the batch's anonymous ids held (repository.lock_anonymous_ids), blocked
ids, links by identity.LINK (first link wins, a limit per user, conflicts recorded, each link
logged) and aliases by identity.merge_alias (SIDES with the merge's snapshot, then merges.MERGE,
one statement that logs, moves, records and folds; or a recorded conflict). The baseline is the
path as it stood before #25 (commit fdf4936^), kept here for measurement only: no lock, nothing
blocked, links in the effects statement (INSERT ... ON CONFLICT DO NOTHING and the anonymous
events of each new link attached) and every alias merged unconditionally. Everything else
(events, profiles, companies, memberships) is the same code on both sides.

Each traffic runs on a fresh database of its own, each side into an environment of its own there,
the same messages with the same ids, one transaction per batch. Batches alternate in pairs whose
order flips (guarded-baseline, baseline-guarded, ...) after two warm-up pairs that are not counted,
so the drift of a shared machine weighs on both. Per batch of 500: 150 identify (most with an
anonymousId whose anonymous events the previous batch stored, some repeating their own link, some
naming an anonymousId already another user's: the guard records a conflict), 25 alias (most an
anonymous previousId with events of its own; one in five one identified user into another, which
the guard refuses and the baseline merges), 325 track (two in five anonymous). Figures are wall
time per batch, Postgres included: messages/s per side and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import asyncpg

from bench import payloads, servers
from bench.procs import ROOT
from bench.report import Row, num, ratio
from bench.targets import IDENTITY_GUARDS
from integration.environments.identity import DEFAULT_RULES, IdentityRules
from integration.inbound import ingest, repository
from integration.inbound.digests import InstallKey
from integration.spec import Message, parse

# --- The pre-#25 path (fdf4936^), for measurement only: what the guards are weighed against ---

# integration/inbound/repository.py's APPLY_EFFECTS before #25: profiles, the links (the first
# wins, nothing counted, nothing logged), the anonymous events of new links attached, and
# memberships, in one statement. The profile upserts are today's, so that only links differ.
BASELINE_APPLY_EFFECTS = f"""
WITH users_upserted AS ({repository._upsert_profiles("users", "user_id", 2)}),
companies_upserted AS ({repository._upsert_profiles("companies", "group_id", 3)}),
linked AS (
    INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
    SELECT CAST($1 AS uuid), r.anonymous_id, r.user_id
    FROM jsonb_to_recordset(CAST($4 AS jsonb)) AS r(anonymous_id text, user_id text)
    ORDER BY r.anonymous_id
    ON CONFLICT (environment_id, anonymous_id) DO NOTHING
    RETURNING anonymous_id, user_id
),
attached AS (
    UPDATE events e SET user_id = l.user_id
    FROM linked l
    WHERE e.environment_id = CAST($1 AS uuid) AND e.anonymous_id = l.anonymous_id
      AND e.user_id IS NULL
    RETURNING e.user_id, e.group_id
),
memberships_added AS (
    INSERT INTO memberships (environment_id, user_id, group_id)
    SELECT CAST($1 AS uuid), m.user_id, m.group_id FROM (
        SELECT r.user_id, r.group_id
        FROM jsonb_to_recordset(CAST($5 AS jsonb)) AS r(user_id text, group_id text)
        UNION
        SELECT user_id, group_id FROM attached WHERE group_id IS NOT NULL
    ) AS m
    ORDER BY m.user_id, m.group_id
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM users_upserted) AS users,
       (SELECT count(*) FROM companies_upserted) AS companies,
       (SELECT count(*) FROM attached) AS attached,
       (SELECT count(*) FROM memberships_added) AS memberships
"""

# repository.merge_alias before #25: every alias merged, whoever its two sides are.
# repository.merge_alias before #25: every alias merged, whoever its two sides are. Each with
# the number of its placeholders (previousId is $2, userId $3): the driver wants exactly that.
BASELINE_ALIAS: list[tuple[str, int]] = [
    (
        """INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
           VALUES (CAST($1 AS uuid), $2, $3) ON CONFLICT DO NOTHING""",
        3,
    ),
    (
        """UPDATE anonymous_ids SET user_id = $3, updated_at = now()
           WHERE environment_id = CAST($1 AS uuid) AND user_id = $2""",
        3,
    ),
    (
        """UPDATE events SET user_id = $3
           WHERE environment_id = CAST($1 AS uuid)
             AND (user_id = $2 OR (anonymous_id = $2 AND user_id IS NULL))""",
        3,
    ),
    (
        """INSERT INTO users (environment_id, user_id, traits, trait_times, first_seen_at,
                              last_seen_at)
           SELECT environment_id, $3, traits, trait_times, first_seen_at, last_seen_at
           FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
           ON CONFLICT (environment_id, user_id) DO UPDATE SET
             traits = merge_traits(users.traits, users.trait_times,
                                   excluded.traits, excluded.trait_times),
             trait_times = merge_trait_times(users.trait_times, excluded.trait_times),
             first_seen_at = least(users.first_seen_at, excluded.first_seen_at),
             last_seen_at = greatest(users.last_seen_at, excluded.last_seen_at),
             updated_at = excluded.updated_at""",
        3,
    ),
    (
        """INSERT INTO memberships (environment_id, user_id, group_id, created_at)
           SELECT environment_id, $3, group_id, created_at FROM memberships
           WHERE environment_id = CAST($1 AS uuid) AND user_id = $2
           ON CONFLICT DO NOTHING""",
        3,
    ),
    ("DELETE FROM memberships WHERE environment_id = CAST($1 AS uuid) AND user_id = $2", 2),
    ("DELETE FROM users WHERE environment_id = CAST($1 AS uuid) AND user_id = $2", 2),
]

# Nothing blocked, no limit, every merge allowed: the rules as they were before #25.
NO_RULES = IdentityRules(frozenset(), 1_000_000, True)


async def _baseline_apply(pg: asyncpg.Connection, env_id: uuid.UUID, fx: Any) -> None:
    """ingest._apply before #25: one effects statement with the links, then every alias."""
    links: dict[str, str] = {}
    for anonymous_id, user_id in fx.links:
        links.setdefault(anonymous_id, user_id)  # the first pair of an anonymousId, as before
    await pg.execute(
        BASELINE_APPLY_EFFECTS,
        env_id,
        repository._json([s.row("key", k) for k, s in fx.users.items()]),
        repository._json([s.row("key", k) for k, s in fx.companies.items()]),
        repository._json([{"anonymous_id": a, "user_id": u} for a, u in links.items()]),
        repository._json([{"user_id": u, "group_id": g} for u, g in sorted(fx.memberships)]),
    )
    for asked in fx.aliases:
        if asked.from_id == asked.user_id:
            continue
        args = (env_id, asked.from_id, asked.user_id)
        for statement, count in BASELINE_ALIAS:
            await pg.execute(statement, *args[:count])


async def _no_lock(pg: asyncpg.Connection, env: uuid.UUID, anonymous_ids: set[str]) -> None:
    """Before #25 a batch held none of its anonymous ids."""


@contextmanager
def baseline_path() -> Iterator[None]:
    """`ingest.store` as it ran before #25, for as long as the block runs (one batch at a
    time: nothing else in this process stores meanwhile)."""
    with (
        mock.patch.object(ingest, "_apply", _baseline_apply),
        mock.patch.object(repository, "lock_anonymous_ids", _no_lock),
    ):
        yield


# --- The traffic ---

IDENTIFY_SHARE, ALIAS_SHARE = 0.30, 0.05
ANONYMOUS_TRACK_SHARE = 0.4  # of the tracks
USERS = 2_000  # userIds are drawn from this many
BEGIN = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Traffic:
    """Batches of messages, each batch's identifies and aliases naming the anonymousIds of the
    previous batch's anonymous tracks, as a visitor identifies after browsing."""

    size: int
    rng: random.Random
    # Whether some messages ask for what the guards refuse (an alias of one identified user into
    # another, an identify with another user's anonymousId); without them, the guards only check.
    refusable: bool = True
    seq: int = 0
    anonymous: list[str] | None = None  # the previous batch's anonymous tracks' ids
    linked: list[tuple[str, str]] | None = None  # (anonymousId, userId) linked before

    def _raw(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        at = BEGIN + timedelta(milliseconds=self.seq)
        return {"type": kind, "messageId": f"ic-{self.seq}", "timestamp": at.isoformat(), **fields}

    def _user(self) -> str:
        return f"user-{self.rng.randrange(USERS)}"

    def _identify(self, fresh: list[str], linked: list[tuple[str, str]]) -> dict[str, Any]:
        roll = self.rng.random()
        user = self._user()
        if roll < 0.1 and linked:  # a returning visitor: the link it made before
            anonymous, user = self.rng.choice(linked)
        elif roll < 0.2 and linked and self.refusable:  # a shared device: another user's id
            anonymous = self.rng.choice(linked)[0]
        else:
            anonymous = fresh.pop() if fresh else f"anon-new-{self.seq}"
            linked.append((anonymous, user))
        traits = {"email": f"{user}@example.com", "plan": "pro", "seen": self.seq}
        return self._raw("identify", userId=user, anonymousId=anonymous, traits=traits)

    def _alias(self, fresh: list[str]) -> dict[str, Any]:
        # Most fold an anonymous visitor in; one in five one identified user into another.
        if self.refusable and (self.rng.random() < 0.2 or not fresh):
            previous = self._user()
        else:
            previous = fresh.pop() if fresh else f"anon-new-{self.seq}"
        return self._raw("alias", userId=self._user(), previousId=previous)

    def _track(self, anonymous: list[str]) -> dict[str, Any]:
        company = f"company_{self.rng.randrange(payloads.COMPANIES):03d}"
        ids: dict[str, Any] = {}
        if self.rng.random() < ANONYMOUS_TRACK_SHARE:
            ids["anonymousId"] = f"anon-{self.seq + 1}"
            anonymous.append(ids["anonymousId"])
        else:
            ids["userId"] = self._user()
        return self._raw(
            "track",
            event=payloads.EVENT,
            properties=payloads.properties(company),
            context=payloads.context(),
            **ids,
        )

    def batch(self) -> list[dict[str, Any]]:
        identifies = round(self.size * IDENTIFY_SHARE)
        aliases = round(self.size * ALIAS_SHARE)
        fresh = list(self.anonymous or [])
        self.rng.shuffle(fresh)
        linked = self.linked if self.linked is not None else []
        anonymous: list[str] = []
        out = [self._identify(fresh, linked) for _ in range(identifies)]
        out += [self._alias(fresh) for _ in range(aliases)]
        out += [self._track(anonymous) for _ in range(self.size - identifies - aliases)]
        self.rng.shuffle(out)
        self.anonymous, self.linked = anonymous, linked[-5_000:]
        return out


# --- The measurement ---


@dataclass(frozen=True)
class IdentityCost:
    size: int  # messages per batch
    batches: int  # counted per side
    refusable: bool  # the traffic asked for what the guards refuse (Traffic.refusable)
    guarded_s: list[float]  # each counted batch's wall time
    baseline_s: list[float]
    conflicts: int  # what the guard refused, in the guarded environment
    logged: int  # links and merges logged there

    def per_s(self, times: list[float]) -> float:
        return self.size * len(times) / sum(times)

    @property
    def guarded_per_s(self) -> float:
        return self.per_s(self.guarded_s)

    @property
    def baseline_per_s(self) -> float:
        return self.per_s(self.baseline_s)

    @property
    def ratio(self) -> float:
        return self.guarded_per_s / self.baseline_per_s

    @property
    def within_target(self) -> bool:
        return IDENTITY_GUARDS.at_least(self.ratio)

    @property
    def traffic(self) -> str:
        refused = "some refused" if self.refusable else "nothing to refuse"
        return f"30% identify, 5% alias; {refused}"

    def summary(self) -> dict[str, object]:
        """The figures, without the samples (for results/latest.json)."""
        return {
            "refusable": self.refusable,
            "size": self.size,
            "batches": self.batches,
            "guarded_per_s": self.guarded_per_s,
            "baseline_per_s": self.baseline_per_s,
            "ratio": self.ratio,
            "guarded_batch_ms_p50": 1000 * statistics.median(self.guarded_s),
            "baseline_batch_ms_p50": 1000 * statistics.median(self.baseline_s),
            "conflicts": self.conflicts,
            "logged": self.logged,
        }

    def line(self) -> str:
        verdict = "within" if self.within_target else "OVER"
        return (
            f"identity guards, {self.batches} batches of {self.size} per side ({self.traffic}):"
            f" guarded {self.guarded_per_s:,.0f} messages/s (batch p50"
            f" {1000 * statistics.median(self.guarded_s):.1f} ms), before #25"
            f" {self.baseline_per_s:,.0f} messages/s (p50"
            f" {1000 * statistics.median(self.baseline_s):.1f} ms): {self.ratio:.2f}x,"
            f" {verdict} the target ({IDENTITY_GUARDS.text}); the guard logged"
            f" {self.logged:,} links and merges and recorded {self.conflicts:,} conflicts"
        )


@dataclass(frozen=True)
class IdentityCosts:
    refusing: IdentityCost  # the traffic, with what the guards refuse
    checking: IdentityCost  # the same shares, nothing to refuse: the checks alone

    def both(self) -> tuple[IdentityCost, IdentityCost]:
        return self.refusing, self.checking

    def summary(self) -> dict[str, object]:
        """The figures, without the samples (for results/latest.json)."""
        return {"refusing": self.refusing.summary(), "checking": self.checking.summary()}

    def line(self) -> str:
        return "\n".join(cost.line() for cost in self.both())


def rows(costs: IdentityCosts) -> list[Row]:
    what = {
        True: "identify/alias-heavy batches (30% identify, 5% alias; one alias in five of one"
        " identified user into another, one identify in ten with another user's anonymousId)",
        False: "the same with nothing for the guards to refuse (their checks alone)",
    }
    return [
        Row(
            f"inbound: {what[cost.refusable]}, {cost.batches} of {cost.size} per side"
            " interleaved: messages/s, guarded (#25) / the path before it",
            num(cost.guarded_per_s),
            num(cost.baseline_per_s),
            ratio(cost.guarded_per_s, cost.baseline_per_s),
            target=IDENTITY_GUARDS.text,
            met=cost.within_target,
        )
        for cost in costs.both()
    ]


async def _environment(pg: asyncpg.Connection, name: str) -> uuid.UUID:
    env = uuid.uuid4()
    await pg.execute(
        "INSERT INTO environments (id, name, webhook_key_hash, webhook_key_hint)"
        " VALUES ($1, $2, $3, 'idc')",
        env,
        f"{name}-{env.hex[:8]}",
        uuid.uuid4().hex + uuid.uuid4().hex,
    )
    return env


async def _timed(
    pg: asyncpg.Connection, env: uuid.UUID, batch: list[Message], guarded: bool, key: InstallKey
) -> float:
    rules = DEFAULT_RULES if guarded else NO_RULES
    began = time.perf_counter()
    async with pg.transaction():
        if guarded:
            await ingest.store(pg, env, "company_id", batch, key, rules)
        else:
            with baseline_path():
                await ingest.store(pg, env, "company_id", batch, key, rules)
    return time.perf_counter() - began


async def interleaved(
    url: str, *, batches: int, size: int, refusable: bool, warmup: int = 2
) -> IdentityCost:
    pg = await asyncpg.connect(servers.plain(url))
    try:
        guarded_env = await _environment(pg, "guarded")
        baseline_env = await _environment(pg, "baseline")
        key = InstallKey(secrets.token_bytes(32))  # no erasures here: any key will do
        traffic = Traffic(size, random.Random(25), refusable)
        spent: dict[bool, list[float]] = {True: [], False: []}
        for n in range(warmup + batches):
            raw = traffic.batch()
            # The same messages (the same ids) into each side's own environment.
            batch = [parse(r) for r in raw]
            order = (True, False) if n % 2 == 0 else (False, True)
            for guarded in order:
                env = guarded_env if guarded else baseline_env
                took = await _timed(pg, env, batch, guarded, key)
                if n >= warmup:
                    spent[guarded].append(took)
            if n == warmup - 1:
                await pg.execute("ANALYZE")  # plans for tables that now hold rows
        conflicts = await pg.fetchval(
            "SELECT count(*) FROM identity_conflicts WHERE environment_id = $1", guarded_env
        )
        logged, unlogged = [
            await pg.fetchval("SELECT count(*) FROM identity_log WHERE environment_id = $1", env)
            for env in (guarded_env, baseline_env)
        ]
        # The swap held: the path before #25 logged nothing.
        assert logged and not unlogged, (logged, unlogged)
    finally:
        await pg.close()
    return IdentityCost(size, batches, refusable, spent[True], spent[False], conflicts, logged)


def measure_fresh(
    server_url: str, *, batches: int = 80, size: int = 500, shared: bool = False
) -> IdentityCosts:
    """Both traffics, each on a database made and migrated for it (both sides in environments
    of their own there), dropped after: the second traffic does not start on the first's rows.
    `shared`: both on one database, the second's environments new to its statistics."""
    if shared:
        return IdentityCosts(*_on_fresh_database(server_url, batches, size, (True, False)))
    return IdentityCosts(
        *(_on_fresh_database(server_url, batches, size, (r,))[0] for r in (True, False))
    )


def _on_fresh_database(
    server_url: str, batches: int, size: int, traffics: tuple[bool, ...]
) -> list[IdentityCost]:
    name, url = servers.create_database(server_url)
    try:
        secret = "identity-cost-" + secrets.token_urlsafe(24)
        servers.cli({"DATABASE_URL": url, "SECRET_KEY": secret, "ADMIN_TOKEN": secret}, "migrate")
        return [
            asyncio.run(interleaved(url, batches=batches, size=size, refusable=refusable))
            for refusable in traffics
        ]
    finally:
        servers.drop_database(server_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=80, help="counted batches per side")
    parser.add_argument("--size", type=int, default=500, help="messages per batch")
    parser.add_argument(
        "--shared-database",
        action="store_true",
        help="both traffics on one database (the second on the first's rows)",
    )
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    try:
        costs = measure_fresh(
            srv.postgres_url, batches=args.batches, size=args.size, shared=args.shared_database
        )
        print(costs.line())
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
