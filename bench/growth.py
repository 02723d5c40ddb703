"""How the product holds up as its tables grow: the same measurements with 0, 2M and 10M events
already stored (20,000 users, 2,000 companies, 2 environments, 90 days of message times).

    make bench-growth                       (or python -m bench.growth [--sizes 0,2000000,...])

At each size, after loading, folding old activity counts into days as the worker does, and a
VACUUM ANALYZE + CHECKPOINT:
  - batch ingest: wrk, arrays of 100 messages, -c16, events/s committed;
  - single messages: wrk, -c64, p99 latency;
  - the admin API: the events list, a user's page and the stats, 40 requests each, p50/p99;
  - the size of the events table and its indexes on disk.
The figure of merit is the ratio of the largest size to the empty one. Results go to
bench/results/growth.md (a table) and growth.svg (a chart drawn here, no plotting library).

The loader writes straight into the schema with INSERT ... SELECT generate_series (Postgres
makes the rows itself, ~0.5M per statement, both environments at once), then the profiles,
anonymous ids and memberships those events imply.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench import payloads, procs, servers, wrk
from bench.procs import ROOT, Children
from integration.store import activity

RESULTS = ROOT / "bench" / "results"
DATA = ROOT / ".data-bench"
USERS_PER_ENV, COMPANIES_PER_ENV = 10_000, 1_000
CHUNK = 500_000
ADMIN_REQUESTS = 40
ADMIN_PAGES = ("events list", "user page", "stats")

LOAD_EVENTS = """
INSERT INTO events (environment_id, message_id, type, name, user_id, anonymous_id, group_id,
                    properties, context, extra, timestamp, sent_at, received_at, created_at)
SELECT $1::uuid, 'load-' || g, 'track', $2::text,
       'user_' || lpad((g % $5::int)::text, 5, '0'),
       'anon-user_' || lpad((g % $5::int)::text, 5, '0'),
       'company_' || lpad((g % $6::int)::text, 4, '0'),
       jsonb_set($3::jsonb, '{company_id}',
                 to_jsonb('company_' || lpad((g % $6::int)::text, 4, '0'))),
       $4::jsonb, '{"version": 2}'::jsonb, t.at, t.at, t.at, t.at
FROM generate_series($7::bigint, $8::bigint) AS g,
     LATERAL (SELECT now() - (g % 7776000) * interval '1 second' AS at) AS t
"""

LOAD_PROFILES = [
    """INSERT INTO users (environment_id, user_id, traits, trait_times, first_seen_at,
                          last_seen_at)
       SELECT $1::uuid, 'user_' || lpad(u::text, 5, '0'),
              jsonb_build_object('email', 'user' || u || '@example.com', 'plan', 'pro'),
              '{"email": 0, "plan": 0}'::jsonb, now() - interval '90 days', now()
       FROM generate_series(0, $2::int - 1) AS u ON CONFLICT DO NOTHING""",
    """INSERT INTO companies (environment_id, group_id, traits, first_seen_at, last_seen_at)
       SELECT $1::uuid, 'company_' || lpad(c::text, 4, '0'), jsonb_build_object('name', 'Co ' || c),
              now() - interval '90 days', now()
       FROM generate_series(0, $2::int - 1) AS c ON CONFLICT DO NOTHING""",
    """INSERT INTO anonymous_ids (environment_id, anonymous_id, user_id)
       SELECT $1::uuid, 'anon-user_' || lpad(u::text, 5, '0'), 'user_' || lpad(u::text, 5, '0')
       FROM generate_series(0, $2::int - 1) AS u ON CONFLICT DO NOTHING""",
    """INSERT INTO memberships (environment_id, user_id, group_id)
       SELECT $1::uuid, 'user_' || lpad(u::text, 5, '0'),
              'company_' || lpad(((u * k) % $3::int)::text, 4, '0')
       FROM generate_series(0, $2::int - 1) AS u, generate_series(1, 3) AS k
       ON CONFLICT DO NOTHING""",
]


@dataclass
class Point:
    events: int
    batch_events_per_s: float = 0.0
    single_p99_ms: float = 0.0
    single_rps: float = 0.0
    # What else happened while the single-message run ran, to tell a slow server from a
    # machine that stalled: p50, non-2xx answers, Postgres's reads from outside its buffers,
    # checkpoints.
    single_during: dict[str, float] = field(default_factory=dict)
    admin_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    events_mb: float = 0.0
    indexes_mb: float = 0.0
    load_seconds: float = 0.0


@dataclass
class Growth:
    url: str
    env_ids: list[str]
    webhook_key: str
    admin_token: str
    base: str
    template: Path
    loaded: int = 0
    points: list[Point] = field(default_factory=list)


async def _load_env(url: str, env_id: str, start: int, stop: int) -> None:
    pg = await asyncpg.connect(servers.plain(url))
    try:
        properties = orjson.dumps(payloads.properties("")).decode()
        context = orjson.dumps(payloads.context()).decode()
        for low in range(start, stop, CHUNK):
            high = min(low + CHUNK, stop) - 1
            await pg.execute(
                LOAD_EVENTS,
                env_id,
                payloads.EVENT,
                properties,
                context,
                USERS_PER_ENV,
                COMPANIES_PER_ENV,
                low,
                high,
            )
        users, companies, anonymous, memberships = LOAD_PROFILES
        await pg.execute(users, env_id, USERS_PER_ENV)
        await pg.execute(companies, env_id, COMPANIES_PER_ENV)
        await pg.execute(anonymous, env_id, USERS_PER_ENV)
        await pg.execute(memberships, env_id, USERS_PER_ENV, COMPANIES_PER_ENV)
    finally:
        await pg.close()


async def load(g: Growth, total: int) -> float:
    """Bring the stored events up to `total`, split over the environments, both at once."""
    per_env_before, per_env_after = g.loaded // len(g.env_ids), total // len(g.env_ids)
    began = time.perf_counter()
    await asyncio.gather(
        *(_load_env(g.url, env, per_env_before, per_env_after) for env in g.env_ids)
    )
    pg = await asyncpg.connect(servers.plain(g.url))
    try:
        # The loaded events arrived over 90 days: the worker folds minutes older than two days
        # into days every ten minutes, so a real install holds those counts folded.
        await pg.execute(str(activity.FOLD_TO_DAYS))
        await pg.execute("VACUUM ANALYZE")
        await pg.execute("CHECKPOINT")
    finally:
        await pg.close()
    g.loaded = total
    return time.perf_counter() - began


def sizes(url: str) -> tuple[float, float]:
    heap = servers.query(url, "SELECT pg_table_size('events')")
    indexes = servers.query(url, "SELECT pg_indexes_size('events')")
    return int(heap) / 1e6, int(indexes) / 1e6


async def admin_timings(g: Growth) -> dict[str, dict[str, float]]:
    env = g.env_ids[0]
    paths = {
        "events list": f"/api/environments/{env}/events?limit=50",
        "user page": f"/api/environments/{env}/users/user_00042",
        "stats": f"/api/environments/{env}/stats",
    }
    out = {}
    headers = {"Authorization": f"Bearer {g.admin_token}"}
    async with httpx.AsyncClient(base_url=g.base, headers=headers, timeout=60) as client:
        for name, path in paths.items():
            times = []
            for _ in range(ADMIN_REQUESTS):
                began = time.perf_counter()
                response = await client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
            times.sort()
            out[name] = {
                "p50": statistics.median(times),
                "p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
            }
    return out


def measure(g: Growth, size: int, seconds: int) -> Point:
    point = Point(size)
    point.load_seconds = asyncio.run(load(g, max(size, g.loaded)))
    point.events_mb, point.indexes_mb = sizes(g.url)
    url = f"{g.base}/webhooks/segment/{g.webhook_key}"
    before = int(servers.query(g.url, "SELECT count(*) FROM events"))
    batch = wrk.run(
        url, template=g.template, prefix=f"gb{size}", connections=16, seconds=seconds, batch=100
    )
    after = int(servers.query(g.url, "SELECT count(*) FROM events"))
    point.batch_events_per_s = (after - before) / batch.duration_s
    counters = postgres_counters(g.url)
    single = wrk.run(url, template=g.template, prefix=f"gs{size}", connections=64, seconds=seconds)
    point.single_p99_ms, point.single_rps = single.p99, single.rps
    read_mb, checkpoints = (b - a for a, b in zip(counters, postgres_counters(g.url), strict=True))
    point.single_during = {
        "p50_ms": single.p50,
        "non_2xx": single.non2xx + single.non2xx_wrk,
        "postgres_read_mb": read_mb,
        "checkpoints": checkpoints,
    }
    point.admin_ms = asyncio.run(admin_timings(g))
    g.loaded = int(servers.query(g.url, "SELECT count(*) FROM events"))
    return point


POSTGRES_COUNTERS = """
SELECT ARRAY[(SELECT blks_read FROM pg_stat_database WHERE datname = current_database())
               * current_setting('block_size')::float8 / 1e6,
             (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)::float8]
"""


def postgres_counters(url: str) -> tuple[float, float]:
    """MB this database read from outside Postgres's buffers (the OS cache or the disk), and
    checkpoints begun, so far."""
    row = servers.query(url, POSTGRES_COUNTERS)
    return float(row[0]), float(row[1])


# --- report -----------------------------------------------------------------------------------


def table(points: list[Point]) -> str:
    first = points[0]
    head = (
        "| events stored | batch events/s (vs empty) | single req/s | single p99 |"
        " events list p99 | user page p99 | stats p99 | events table + indexes on disk |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for p in points:
        ratio = p.batch_events_per_s / first.batch_events_per_s if first.batch_events_per_s else 0
        admin = [
            p.admin_ms.get(k, {}).get("p99", 0.0) for k in ("events list", "user page", "stats")
        ]
        rows.append(
            f"| {p.events:,} | {p.batch_events_per_s:,.0f} ({ratio:.2f}x) | {p.single_rps:,.0f} |"
            f" {p.single_p99_ms:.1f} ms | {admin[0]:.1f} ms | {admin[1]:.1f} ms |"
            f" {admin[2]:.1f} ms | {p.events_mb:,.0f} + {p.indexes_mb:,.0f} MB |"
        )
    return head + "\n".join(rows) + "\n"


def during(points: list[Point]) -> str:
    """The single-message runs beside what else the machine did meanwhile."""
    head = (
        "While each single-message run ran (reads from outside Postgres's buffers come from the"
        " OS cache or the disk; a checkpoint writes dirty pages out):\n\n"
        "| events stored | single p50 / p99 | non-2xx | Postgres read from outside its buffers"
        " | checkpoints begun |\n|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {p.events:,} | {d.get('p50_ms', 0):.1f} ms / {p.single_p99_ms:.1f} ms"
        f" | {d.get('non_2xx', 0):,.0f} | {d.get('postgres_read_mb', 0):,.1f} MB"
        f" | {d.get('checkpoints', 0):.0f} |"
        for p in points
        for d in [p.single_during]
    ]
    return head + "\n".join(rows) + "\n"


def projection(points: list[Point]) -> str:
    big = max(points, key=lambda p: p.events)
    if not big.events:
        return ""
    per_event = (big.events_mb + big.indexes_mb) * 1e6 / big.events
    month = 1000 * 86400 * 30
    return (
        f"On disk: {per_event:,.0f} bytes per stored event (table and indexes), so"
        f" {big.events:,} events take {(big.events_mb + big.indexes_mb) / 1000:,.1f} GB and one"
        f" month at 1,000 events/s ({month / 1e9:.2f} billion events) would take about"
        f" {per_event * month / 1e12:,.1f} TB.\n"
    )


WIDTH, HEIGHT, PAD = 960, 380, 64
PANEL = (WIDTH - 3 * PAD) // 2
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg(points: list[Point]) -> str:
    """Two panels by events stored: ingest relative to the empty database (target 0.8), and
    p99 latencies (admin pages' target 100 ms), each with its scale, targets and values."""
    base = points[0].batch_events_per_s or 1
    ingest = {"batch events/s, relative to empty": [p.batch_events_per_s / base for p in points]}
    latency = {
        "single message p99": [p.single_p99_ms for p in points],
        "events list p99": [p.admin_ms.get("events list", {}).get("p99", 0) for p in points],
        "user page p99": [p.admin_ms.get("user page", {}).get("p99", 0) for p in points],
        "stats p99": [p.admin_ms.get("stats", {}).get("p99", 0) for p in points],
    }
    xs = [p.events for p in points]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        ' font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        *_panel(PAD, "Batch ingest vs the empty database", xs, ingest, (0.8, "target 0.8"), "x"),
        *_panel(2 * PAD + PANEL, "p99 latency (ms)", xs, latency, (100, "admin target"), " ms"),
        "</svg>",
    ]
    return "\n".join(parts)


def _panel(
    left: int,
    title: str,
    xs: list[int],
    series: dict[str, list[float]],
    target: tuple[float, str],
    unit: str,
) -> list[str]:
    top_x = max(xs) or 1
    step = _tick_step(1.1 * max(target[0], *(v for values in series.values() for v in values)))
    top_y = step * 5
    bottom = HEIGHT - PAD

    def at(e: float, v: float) -> tuple[float, float]:
        return left + PANEL * e / top_x, bottom - (HEIGHT - 2 * PAD) * v / top_y

    out = [f'<text x="{left}" y="24" font-size="14">{title}</text>']
    taken: list[float] = []  # label heights already used, so that close lines' labels stay legible
    for tick in (step * k for k in range(5)):
        _, y = at(0, tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + PANEL}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{tick:,g}</text>"
        )
    _, ty = at(0, target[0])
    out.append(
        f'<line x1="{left}" y1="{ty:.1f}" x2="{left + PANEL}" y2="{ty:.1f}" stroke="#999"'
        f' stroke-dasharray="4"/><text x="{left + PANEL / 2}" y="{ty - 4:.1f}" font-size="10"'
        f' fill="#666" text-anchor="middle">{target[1]}</text>'
    )
    for n, ((label, values), colour) in enumerate(zip(series.items(), COLOURS, strict=False)):
        points = [at(e, v) for e, v in zip(xs, values, strict=True)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        # Every value when the panel has one line; otherwise the largest size's, at the right.
        labelled = list(zip(points, values, strict=True))[0 if len(series) == 1 else -1 :]
        for (px, py), v in labelled:
            shown = f"{v:.2f}{unit}" if unit == "x" else f"{v:,.0f}{unit}"
            ly = py - 6
            while any(abs(ly - t) < 11 for t in taken):
                ly += 11
            taken.append(ly)
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
                f'<text x="{px + 4:.1f}" y="{ly:.1f}" font-size="10" fill="{colour}">'
                f"{shown}</text>"
            )
        out.append(
            f'<text x="{left + 8}" y="{44 + 15 * n}" fill="{colour}" font-size="12">{label}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + PANEL}" y2="{bottom}" stroke="black"/>'
        f'<line x1="{left}" y1="{PAD}" x2="{left}" y2="{bottom}" stroke="black"/>'
        f'<text x="{left + PANEL / 2}" y="{HEIGHT - 14}" font-size="12"'
        ' text-anchor="middle">events stored</text>'
    )
    for e in xs:
        px, _ = at(e, 0)
        out.append(
            f'<text x="{px:.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">'
            f"{e / 1e6:g}M</text>"
        )
    return out


def _tick_step(highest: float) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) with which five ticks cover `highest`."""
    magnitude = 10 ** math.floor(math.log10(highest / 5)) if highest > 0 else 1
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude * 5 >= highest)


def write(points: list[Point], notes: list[str]) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "growth.svg").write_text(svg(points))
    (RESULTS / "growth.json").write_bytes(
        orjson.dumps([p.__dict__ for p in points], option=orjson.OPT_INDENT_2)
    )
    body = (
        "# Growth: the same measurements as the tables fill\n\n"
        + "Command: `make bench-growth`. "
        + " ".join(notes)
        + "\n\n"
        + table(points)
        + "\n"
        + during(points)
        + "\n"
        + projection(points)
        + "\n![growth](growth.svg)\n"
    )
    (RESULTS / "growth.md").write_text(body)
    return body


# --- main -------------------------------------------------------------------------------------


def setup(children: Children, srv: servers.Servers, run: str) -> Growth:
    _, url = servers.create_database(srv.postgres_url)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": srv.redis_url,
        "ADMIN_TOKEN": "growth-admin-token-" + run + "x" * 16,
        "SECRET_KEY": "growth-secret-key-" + run + "y" * 24,
        "LOG_LEVEL": "WARNING",
        "ARQ_QUEUE_NAME": f"growth:{run}",
    }
    children.env = dict(env)
    servers.cli(env, "migrate")
    created = [servers.create_environment(env, f"growth-{i}") for i in range(2)]
    port = procs.free_port()
    serve = children.python("serve", "-m", "integration", "serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{base}/healthz", serve)
    template = DATA / "logs" / f"growth-{run}" / "message-template.json"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(payloads.lua_template())
    return Growth(
        url=url,
        env_ids=[c["id"] for c in created],
        webhook_key=created[0]["webhook_key"],
        admin_token=env["ADMIN_TOKEN"],
        base=base,
        template=template,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,2000000,10000000")
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    args = parser.parse_args()
    run = time.strftime("%H%M%S")
    srv = servers.start(DATA)
    children = Children(log_dir=DATA / "logs" / f"growth-{run}")
    points: list[Point] = []
    database = ""
    try:
        g = setup(children, srv, run)
        database = g.url.rsplit("/", 1)[-1]
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"[growth] {size:,} events stored: loading and measuring", flush=True)
            points.append(measure(g, size, args.seconds))
            print(table(points[-1:]), flush=True)
    finally:
        children.stop_all()
        if database:
            servers.drop_database(srv.postgres_url, database)
        srv.stop()
    notes = [
        f"{len(points)} sizes, wrk runs of {args.seconds} s, {ADMIN_REQUESTS} admin requests each."
    ]
    print(write(points, notes))


if __name__ == "__main__":
    main()
