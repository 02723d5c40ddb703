"""What every phase of `make bench` shares: the plan, the run (setup, its servers, keys and
results) and the measuring helpers (bench/run.py is the entry point)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from bench import (
    claim_cost,
    identity_cost,
    identity_growth,
    isolation,
    mapping_cost,
    payloads,
    procs,
    servers,
    wrk,
)
from bench.cpu import CpuWatch
from bench.procs import ROOT, Child, Children

if TYPE_CHECKING:  # the phases' modules read Run: their types only, when type-checking
    from bench import intake_phase, outbound

RESULTS = ROOT / "bench" / "results"


DATA = ROOT / ".data-bench"


@dataclass
class Plan:
    seconds: int = 20  # each measured wrk run
    warmup: int = 3  # wrk warm-up before a server's first measured run
    connections: int = 64
    batch_connections: int = 16
    batch_size: int = 100
    paced_seconds: int = 15
    outbound_n: int = 50_000
    per_request: int = 500  # product events per publish request
    publish_concurrency: int = 4
    latency_seconds: int = 15
    profile_seconds: int = 15
    big_batches: int = 20  # requests of 4,000 events
    floor_events: int = 200_000
    intake_n: int = 20_000  # events analytics-python sends through the intake, and directly
    intake_latency_seconds: int = 15
    isolation_seconds: int = 10  # each isolation window
    isolation_pairs: int = 4  # healthy and hung windows, each this many times
    mapping_quick: bool = False  # fewer events and rounds for the mapping's cost
    identity_batches: int = 80  # identify/alias-heavy batches of 500, each side

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            seconds=5,
            warmup=1,
            paced_seconds=5,
            outbound_n=5_000,
            latency_seconds=5,
            profile_seconds=5,
            big_batches=5,
            floor_events=50_000,
            intake_n=5_000,
            intake_latency_seconds=5,
            isolation_seconds=5,
            isolation_pairs=3,
            mapping_quick=True,
            identity_batches=10,
        )


@dataclass(frozen=True)
class RowsCheck:
    """Rows the events table gained during a wrk run, against the messages in its 2xx."""

    rows: int
    expected: int
    difference: int


@dataclass(frozen=True)
class WrkRun:
    """One measured wrk run (wrk_summary's figures), the CPU it cost, and what a phase adds."""

    rps: float
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    percentiles_ms: dict[Any, float]
    ok: int
    non2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    command: str
    cpu: dict[str, float]
    rows: RowsCheck | None = None  # every 2xx one row (ours)
    rss_mb: float | None = None
    events_per_s: float | None = None  # batches: rows committed per second
    target_rps: float | None = None  # paced: the rate asked for
    pace_ms: int | None = None
    processes: int | None = None  # two processes each

    @classmethod
    def of(cls, result: wrk.WrkResult, cpu: dict[str, float], **extra: Any) -> WrkRun:
        return cls(**wrk_summary(result), cpu=cpu, **extra)


@dataclass(frozen=True)
class FloorRun:
    """The batch phase's rows written by COPY, without HTTP (bench/floor.py)."""

    events: int
    seconds: float
    events_per_s: float
    cpu: dict[str, float]


@dataclass(frozen=True)
class BigRun:
    """Requests of 4,000 events one after another: the time each took to answer."""

    requests: int
    p50_s: float
    p99_s: float
    max_s: float
    non2xx: int
    body_mb: float
    rows: int  # stored, the warm-up request's left out
    expected: int


@dataclass
class Inbound:
    """The inbound phases' wrk runs, filled in as they run."""

    bare: WrkRun | None = None
    bare_after: WrkRun | None = None  # the bare endpoint again, after ours
    single: WrkRun | None = None
    batch: WrkRun | None = None
    paced: WrkRun | None = None
    two_bare: WrkRun | None = None  # both servers as two processes each
    two_serve: WrkRun | None = None
    floor: FloorRun | None = None
    big_batches: BigRun | None = None

    def as_json(self) -> dict[str, Any]:
        """As results/latest.json has them."""
        two = {k: v for k, v in (("bare", self.two_bare), ("serve", self.two_serve)) if v}
        runs = {
            "bare": self.bare,
            "bare_after": self.bare_after,
            "single": self.single,
            "batch": self.batch,
            "paced": self.paced,
            "floor": self.floor,
            "big_batches": self.big_batches,
        }
        return {k: v for k, v in runs.items() if v} | ({"two_processes": two} if two else {})


@dataclass
class Run:
    plan: Plan
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Filled in by setup:
    env: dict[str, str] = field(default_factory=dict)
    db_url: str = ""
    postmaster: int | None = None
    env_id: str = ""
    webhook_key: str = ""
    source_key: str = ""  # the environment's source write key, for the /v1 intake
    our_write_key: str = ""
    peer_write_key: str = ""
    sink_url: str = ""
    template: Path = Path()
    worker: Child | None = None
    isolated: isolation.Isolation | None = None  # the isolation phase's windows
    claims: claim_cost.ClaimCosts | None = None  # the ordered claim's cost
    mapping: mapping_cost.MappingCost | None = None  # a mapping's CPU per event
    identity_guards: identity_cost.IdentityCosts | None = None  # their cost to batches (#25)
    big_identity: identity_growth.IdentityGrowth | None = None  # 10,000 ids: page, unmerge
    inbound: Inbound = field(default_factory=Inbound)
    intake: intake_phase.Intake | None = None  # the /v1 intake's phase
    peer: outbound.Peer | None = None  # the outbound yardstick
    ours_out: outbound.OursOut | None = None  # our outbound throughput
    latency: outbound.PublishLatency | None = None  # publish → delivered at 1,000/s

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def events_count(run: Run) -> int:
    return int(
        servers.query(
            run.db_url, "SELECT count(*) FROM events WHERE environment_id = $1::uuid", run.env_id
        )
    )


def checkpoint(run: Run) -> None:
    """Every measured phase starts right after a checkpoint: otherwise whether one of Postgres's
    own (every 5 minutes, or after about 0.5 GB of WAL) falls inside a phase decides much of
    its figure (seen: Postgres CPU per request 0.21 ms in one run, 0.47 ms in the next)."""
    try:
        servers.query(run.db_url, "CHECKPOINT")
    except Exception as exc:  # a BENCH_DATABASE_URL role may not be allowed to
        note = f"no CHECKPOINT before the phases ({type(exc).__name__}: {exc})"
        if note not in run.notes:
            run.notes.append(note)


def settled_events(run: Run, timeout: float = 15) -> int:
    """The events count once it stops moving (requests still in flight get committed)."""
    deadline = time.monotonic() + timeout
    last = events_count(run)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = events_count(run)
        if now == last:
            return now
        last = now
    return last


def sink_stats(run: Run) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{run.sink_url}/stats", timeout=10).json()
    return stats


def tag_tally(run: Run, tag: str) -> dict[str, Any]:
    tally: dict[str, Any] = sink_stats(run)["tags"].get(tag) or {
        "messages": 0,
        "unique": 0,
        "first": None,
        "last": None,
    }
    return tally


def wait_for_tag(run: Run, tag: str, want: int, timeout: float) -> dict[str, Any]:
    """Poll the sink until it holds `want` unique messages of `tag`, or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        tally = tag_tally(run, tag)
        if tally["unique"] >= want or time.monotonic() > deadline:
            return tally
        time.sleep(0.05)


def helper(run: Run, name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """A one-shot helper process (`python -m bench.X`) whose last stdout line is JSON."""
    log_path = DATA / "logs" / run.run_id / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} exited with {done.returncode}:\n{tail}")
    result: dict[str, Any] = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def wrk_summary(r: wrk.WrkResult) -> dict[str, Any]:
    return {
        "rps": r.rps,
        "requests": r.requests,
        "duration_s": r.duration_s,
        "p50_ms": r.p50,
        "p99_ms": r.p99,
        "percentiles_ms": r.percentiles_ms,
        "ok": r.ok,
        "non2xx": r.non2xx,
        "statuses": r.statuses,
        "socket_errors": r.socket_errors,
        "command": " ".join(r.command),
    }


def setup(run: Run, children: Children, srv: servers.Servers) -> None:
    name, run.db_url = servers.create_database(srv.postgres_url)
    run.results["database"] = name
    run.env = {
        "DATABASE_URL": run.db_url,
        "REDIS_URL": srv.redis_url,
        "ADMIN_TOKEN": "bench-admin-" + secrets.token_urlsafe(16),
        "SECRET_KEY": "bench-secret-" + secrets.token_urlsafe(24),
        "LOG_LEVEL": "WARNING",
        "ARQ_QUEUE_NAME": f"bench:{run.run_id}",
        "SEGMENT_API_ALLOWLIST": "127.0.0.1",  # the bench's Segment sink
    }
    children.env = dict(run.env)
    run.say(f"database {name}: migrating")
    servers.cli(run.env, "migrate")
    run.results["postgres_version"] = servers.query(run.db_url, "SHOW server_version")
    run.postmaster = servers.postmaster_pid(run.db_url)

    run.template = DATA / "logs" / run.run_id / "message-template.json"
    run.template.parent.mkdir(parents=True, exist_ok=True)
    run.template.write_text(payloads.lua_template())
    run.results["message_bytes"] = payloads.approx_size()

    run.our_write_key = "bench-ours-" + secrets.token_hex(8)
    run.peer_write_key = "bench-peer-" + secrets.token_hex(8)
    port = procs.free_port()
    run.sink_url = f"http://127.0.0.1:{port}"
    sink = children.python(
        "sink",
        "-m",
        "bench.sink_app",
        "--port",
        str(port),
        "--write-key",
        run.our_write_key,
        "--write-key",
        run.peer_write_key,
    )
    procs.wait_http(f"{run.sink_url}/stats", sink)

    created = servers.create_environment(run.env, "bench")
    run.env_id, run.webhook_key = created["id"], created["webhook_key"]
    run.source_key = created["source_write_key"]
    servers.cli(
        run.env,
        "env",
        "set",
        "bench",
        "--write-key",
        run.our_write_key,
        "--segment-api-url",
        run.sink_url,
        "--stream",
        "on",
    )
    run.say(f"environment bench {run.env_id}; sink on {run.sink_url}")


def measure_wrk(
    run: Run,
    url: str,
    server: Child,
    *,
    prefix: str,
    seconds: int,
    connections: int,
    batch: int = 1,
    pace_ms: int = 0,
    processes: dict[str, int] | None = None,
) -> tuple[wrk.WrkResult, dict[str, float]]:
    """One wrk run after a checkpoint, with the CPU of the server (or of `processes`, for a
    server of several) and of Postgres."""
    checkpoint(run)
    watch = CpuWatch(processes or {server.name: server.pid}, run.postmaster)
    result = wrk.run(
        url,
        template=run.template,
        prefix=prefix,
        connections=connections,
        seconds=seconds,
        batch=batch,
        pace_ms=pace_ms,
    )
    cpu = watch.stop()
    if not server.alive():
        raise RuntimeError(f"{server.name} died under load:\n{server.log_tail()}")
    return result, cpu


def check_rows(run: Run, before: int, result: wrk.WrkResult, per_request: int) -> dict[str, Any]:
    rows = settled_events(run) - before
    expected = result.ok * per_request
    return {"rows": rows, "expected": expected, "difference": rows - expected}


def rows_check(run: Run, before: int, result: wrk.WrkResult, per_request: int) -> RowsCheck:
    """check_rows, typed (bench/citus.py keeps the dict)."""
    return RowsCheck(**check_rows(run, before, result, per_request))


def warm_up(run: Run, port: int, name: str = "ours") -> None:
    url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"
    run.say(f"{name}: warm-up")
    wrk.run(
        url,
        template=run.template,
        prefix=f"w{name}{run.run_id}",
        seconds=run.plan.warmup,
        connections=run.plan.connections,
    )


def start_worker(run: Run, children: Children) -> Child:
    """The one delivery worker of the outbound phases, started once and waited for."""
    if run.worker is not None:
        return run.worker
    worker = run.worker = children.python("worker", "-m", "integration", "worker")
    # The stream was turned on at setup, which queued "Segment Stream Enabled": its arrival
    # at the sink says the worker is up and delivering.
    deadline = time.monotonic() + 30
    while sink_stats(run)["keys"].get(run.our_write_key, {}).get("unique", 0) < 1:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker delivered nothing in 30 s:\n{worker.log_tail()}")
        time.sleep(0.1)
    return worker


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True, check=False
            ).returncode
            != 0
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def cpu_text(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "n/a"
    return ", ".join(f"{name} {pct:.0f}%" for name, pct in cpu.items())


def cpu_per_request(phase: WrkRun | None, server: str, *, only: bool = False) -> float:
    """CPU milliseconds one request cost: the server's share plus Postgres's (or, with `only`,
    just `server`'s; a server of several processes counts them all). On a machine shared with
    the load generator this, not requests/s, bounds what more cores could give."""
    if not phase or not phase.rps:
        return 0.0
    cpu = phase.cpu
    own = sum(v for k, v in cpu.items() if k == server or k.startswith(f"{server} process "))
    percent = own + (0.0 if only else cpu.get("postgres", 0.0))
    return float(percent) / 100 / float(phase.rps) * 1000
