"""Issue #25's growth row: a user with 10,000 linked anonymousIds, the time of their identity page
and of an unmerge.

    python -m bench.identity_growth [--ids 10000] [--loads 10]

A fresh database (BENCH_DATABASE_URL, else embedded Postgres), migrated by the product's own
`migrate`, an environment made by its CLI and set over its admin API to allow a merge of one
identified user into another and up to MAX_IDS anonymousIds a user. Through `ingest.store`, the
webhook's own writer, in transactions of 500: user U identified with IDS anonymousIds, then user
P with IDS of their own; then one alias (previousId P, userId U) folds P into U (timed: the
merge moves P's IDS anonymousIds and events). Then the real server (`python -m integration
serve`) answers, timed from the client (request to last byte, after a warm-up load; the first
load shown too): U's identity (`GET /api/environments/{env}/users/{U}/identity`, every linked
id in one answer) and U's console page (`/admin/environments/{env}/user?id=U`, its identity
card); then `POST .../users/{U}/unmerge {"merged_id": P}`, timed once, and again (nothing left to
undo), and U's identity page once more. Where the server has no unmerge route (404 or 405),
that part is skipped and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench import servers
from bench.console_pages import load_times, sign_in
from bench.procs import ROOT, Children, free_port, wait_http
from bench.report import Row, ms, num
from integration.environments.identity import IdentityRules
from integration.inbound import ingest
from integration.inbound.digests import InstallKey
from integration.spec import Message, parse

IDS = 10_000
# U's ids, P's, and P itself: 2 * IDS + 1 once merged, under the limit with room to spare.
MAX_IDS = 50_000
BATCH = 500
U, P = "growth-user-u", "growth-user-p"
BEGIN = datetime(2026, 12, 1, tzinfo=UTC)
MISSING = (404, 405)  # the unmerge route is not on this server


@dataclass(frozen=True)
class Unmerge:
    ms: float  # the first POST
    again_ms: float  # the same POST, nothing left to undo
    restored: dict[str, Any]  # what the first POST says it put back
    already_undone: bool  # what the second POST says


@dataclass
class IdentityGrowth:
    ids: int  # anonymousIds of each of U and P
    loads: int
    fill_s: float = 0.0  # both users' identifies, through ingest.store
    merge_ms: float = 0.0  # the alias folding P into U, through ingest.store
    linked: int = 0  # U's anonymousIds once P is merged in
    page_first_ms: float = 0.0
    page_ms: list[float] = field(default_factory=list)
    console_first_ms: float = 0.0
    console_ms: list[float] = field(default_factory=list)
    unmerge: Unmerge | None = None
    skipped: str | None = None  # why the unmerge was not timed
    page_after_ms: float | None = None  # U's identity page after the unmerge

    @property
    def page_p50_ms(self) -> float:
        return statistics.median(self.page_ms)

    @property
    def console_p50_ms(self) -> float:
        return statistics.median(self.console_ms)

    def summary(self) -> dict[str, object]:
        """The figures, without the samples (for results/latest.json)."""
        return {
            "ids": self.ids,
            "linked": self.linked,
            "fill_s": self.fill_s,
            "merge_ms": self.merge_ms,
            "page_first_ms": self.page_first_ms,
            "page_p50_ms": self.page_p50_ms,
            "console_first_ms": self.console_first_ms,
            "console_p50_ms": self.console_p50_ms,
            "unmerge_ms": self.unmerge.ms if self.unmerge else None,
            "unmerge_again_ms": self.unmerge.again_ms if self.unmerge else None,
            "restored": self.unmerge.restored if self.unmerge else None,
            "page_after_unmerge_ms": self.page_after_ms,
            "skipped": self.skipped,
        }

    def line(self) -> str:
        out = [
            f"identity growth: U and P with {self.ids:,} anonymousIds each, stored in"
            f" {self.fill_s:.1f} s; the alias folding P into U {self.merge_ms:.0f} ms;"
            f" U then holds {self.linked:,}",
            f"U's identity (API): first {self.page_first_ms:.0f} ms, p50"
            f" {self.page_p50_ms:.0f} ms of {len(self.page_ms)}",
            f"U's console page: first {self.console_first_ms:.0f} ms, p50"
            f" {self.console_p50_ms:.0f} ms of {len(self.console_ms)}",
        ]
        if self.unmerge:
            out.append(
                f"unmerge of P from U: {self.unmerge.ms:.0f} ms (restored"
                f" {self.unmerge.restored}); again {self.unmerge.again_ms:.0f} ms (already_undone:"
                f" {self.unmerge.already_undone}); U's identity after it"
                f" {self.page_after_ms or 0:.0f} ms"
            )
        else:
            out.append(f"unmerge: skipped ({self.skipped})")
        return "; ".join(out)


def rows(g: IdentityGrowth) -> list[Row]:
    who = f"a user with {num(g.linked)} linked anonymousIds ({num(g.ids)} merged in from another)"
    out = [
        Row(
            f"identity growth: {who}: their identity, API (p50 of {len(g.page_ms)}; first load"
            f" {ms(g.page_first_ms)}) / their console page (p50; first {ms(g.console_first_ms)})",
            ms(g.page_p50_ms),
            ms(g.console_p50_ms),
        ),
        Row(f"identity growth: the alias merging {num(g.ids)} anonymousIds in", ms(g.merge_ms)),
    ]
    if g.unmerge:
        out.append(
            Row(
                f"identity growth: the unmerge of those {num(g.ids)} (POST …/unmerge) / the same"
                " again, nothing left to undo",
                ms(g.unmerge.ms),
                ms(g.unmerge.again_ms),
            )
        )
    else:
        out.append(Row("identity growth: the unmerge", f"skipped: {g.skipped}"))
    return out


def _identifies(user: str, prefix: str, ids: int) -> list[Message]:
    return [
        parse(
            {
                "type": "identify",
                "messageId": f"{prefix}-{n}",
                "userId": user,
                "anonymousId": f"{prefix}-anon-{n}",
                "traits": {"email": f"{user}@example.com", f"{prefix}_seen": n},
                "timestamp": (BEGIN + timedelta(milliseconds=n)).isoformat(),
            }
        )
        for n in range(ids)
    ]


async def fill(url: str, env: uuid.UUID, g: IdentityGrowth) -> None:
    """U's and P's identifies, then the alias of P into U, all through ingest.store."""
    rules = IdentityRules.of(None, MAX_IDS, True)
    key = InstallKey(secrets.token_bytes(32))  # no erasures here: any key will do
    pg = await asyncpg.connect(servers.plain(url))
    try:
        began = time.perf_counter()
        for user, prefix in ((U, "u"), (P, "p")):
            messages = _identifies(user, prefix, g.ids)
            for first in range(0, len(messages), BATCH):
                async with pg.transaction():
                    batch = messages[first : first + BATCH]
                    await ingest.store(pg, env, "company_id", batch, key, rules)
        g.fill_s = time.perf_counter() - began
        await pg.execute("VACUUM ANALYZE")
        alias = parse(
            {
                "type": "alias",
                "messageId": "alias-p-into-u",
                "userId": U,
                "previousId": P,
                "timestamp": (BEGIN + timedelta(hours=1)).isoformat(),
            }
        )
        began = time.perf_counter()
        async with pg.transaction():
            await ingest.store(pg, env, "company_id", [alias], key, rules)
        g.merge_ms = 1000 * (time.perf_counter() - began)
        g.linked = await pg.fetchval(
            "SELECT count(*) FROM anonymous_ids WHERE environment_id = $1 AND user_id = $2", env, U
        )
        await pg.execute("VACUUM ANALYZE")
    finally:
        await pg.close()
    # Each a linked id, P itself too: a refused merge (a rule against it) would leave U with IDS.
    assert g.linked == 2 * g.ids + 1, f"the alias did not merge P into U: U holds {g.linked}"


def _timed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[Any, float]:
    """The answer (status checked) and its time in ms, request to last byte."""
    began = time.perf_counter()
    answer = client.request(method, path, **kwargs)
    took = 1000 * (time.perf_counter() - began)
    if answer.status_code in MISSING and path.endswith("/unmerge"):
        raise UnmergeMissing(f"POST …/unmerge answered {answer.status_code}: {answer.text[:200]}")
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return answer.json(), took


class UnmergeMissing(Exception):
    """This server has no unmerge route (not on main yet when this was written)."""


def time_pages(base: str, env: uuid.UUID, token: str, g: IdentityGrowth) -> None:
    api = f"/api/environments/{env}/users/{U}"
    with httpx.Client(base_url=base, timeout=120) as console:
        sign_in(console, token)
        first, times = load_times(console, f"/admin/environments/{env}/user?id={U}", g.loads)
        g.console_first_ms, g.console_ms = 1000 * first, [1000 * t for t in times]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        first, times = load_times(client, f"{api}/identity", g.loads)
        g.page_first_ms, g.page_ms = 1000 * first, [1000 * t for t in times]
        shown, _ = _timed(client, "GET", f"{api}/identity")
        # The page lists every linked id, or (a paged list) counts them all.
        total = shown.get("anonymous_ids_total", len(shown["anonymous_ids"]))
        assert total == g.linked, (total, g.linked)
        try:
            g.unmerge = _unmerge(client, api, g.ids)
        except UnmergeMissing as missing:
            g.skipped = str(missing)
            return
        _, g.page_after_ms = _timed(client, "GET", f"{api}/identity")


def _unmerge(client: httpx.Client, api: str, ids: int) -> Unmerge:
    body = {"merged_id": P}
    answer, took = _timed(client, "POST", f"{api}/unmerge", json=body)
    again, again_took = _timed(client, "POST", f"{api}/unmerge", json=body)
    assert not answer["already_undone"] and again["already_undone"], (answer, again)
    # It undid what the merge moved: P's anonymousIds went back to P.
    assert answer["restored"]["anonymous_ids"] >= ids, answer
    return Unmerge(took, again_took, answer["restored"], again["already_undone"])


def measure_fresh(
    server_url: str, redis_url: str, children: Children, *, ids: int = IDS, loads: int = 10
) -> IdentityGrowth:
    """All of it on a database made and migrated for it, and a server of its own on it; the
    database is dropped after."""
    name, url = servers.create_database(server_url)
    secret = "identity-growth-" + secrets.token_urlsafe(24)
    port = free_port()
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret,
        "ADMIN_TOKEN": secret,
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    g = IdentityGrowth(ids, loads)
    server = None
    try:
        servers.cli(env, "migrate")
        env_id = uuid.UUID(servers.create_environment(env, "identity-growth")["id"])
        server = children.python("identity-growth-serve", "-m", "integration", "serve", env=env)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", server)
        settings = {"max_anonymous_ids_per_user": MAX_IDS, "allow_identified_merges": True}
        answer = httpx.patch(
            f"{base}/api/environments/{env_id}",
            json=settings,
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert answer.status_code == 200, answer.text
        asyncio.run(fill(url, env_id, g))
        time_pages(base, env_id, secret, g)
    finally:
        if server is not None:
            server.stop()
        servers.drop_database(server_url, name)
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ids", type=int, default=IDS, help="anonymousIds of each user")
    parser.add_argument("--loads", type=int, default=10, help="timed loads of each page")
    args = parser.parse_args()
    srv = servers.start(ROOT / ".data-bench")
    children = Children(ROOT / ".data-bench" / "logs" / f"identity-growth-{uuid.uuid4().hex[:8]}")
    try:
        g = measure_fresh(srv.postgres_url, srv.redis_url, children, ids=args.ids, loads=args.loads)
        print(g.line())
    finally:
        children.stop_all()
        srv.stop()


if __name__ == "__main__":
    main()
