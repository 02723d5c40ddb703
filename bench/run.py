"""The benchmark suite: `make bench`, or `python -m bench.run` (also `python bench/run.py`).

One run, on this machine, start to finish:

  setup     Postgres and Redis (BENCH_DATABASE_URL / BENCH_REDIS_URL, else embedded under
            .data-bench/), a fresh database migrated by `python -m integration migrate`, an
            environment `bench` made and configured with the product's own CLI, and a
            Segment-like sink (bench/sink_app.py) in its own process.
  inbound   1-2. single track messages with wrk against a bare Starlette endpoint
            (bench/bare_app.py, the ceiling) and then against `python -m integration serve`;
            every 2xx must be one row in `events`.
            3. batches of 100 messages.  4. a paced run at half of ours' peak (random waits).
            3b. requests of 4,000 events (Webhooks (Actions)' largest), one after another.
            3c. the Postgres floor: the batch phase's rows written by COPY, without HTTP.
            5. the bare endpoint again, so the ratio brackets ours in time.
            5b. both once more as two processes each (`--workers 2`).
  outbound  6. Segment's own Python library (bench/peer.py) sending N events to the sink.
            7. the same N events published through our API with one worker delivering them.
            8. publish-to-delivered latency at a steady 1,000 events/s.
            8b. what per-person order costs the claim (bench/claim_cost.py, its own database).
            8c. isolation: 8's latency while another environment's Segment hangs, against the
            same with it healthy, in interleaved windows (bench/isolation.py).
  intake    9. Segment's own Python library (bench/intake_client.py) as the client of our /v1
            intake (`host=` our server, the environment's source write key; the worker
            delivers to the sink), side by side with the same library posting straight to the
            sink: events/s for N events, then track()-to-sink latency at 1,000 events/s.

It prints a markdown table and writes it, with the details, to bench/results/latest.md.
Every process it starts is stopped at the end, whatever happens; the database is dropped.

Options: --quick (short phases, to try the suite); --profile (also profile the inbound hot
path with py-spy under the single-message load, after all the measured phases; writes
bench/results/profile-inbound.md and .speedscope.json); --profile-only (just that);
--inbound-only, --outbound-only (those phases, table printed, nothing written; outbound includes
the isolation and the intake), --intake-only, --isolation-only (just that phase); --seconds N.

Each phase is a function here (or a module of its own: bench/isolation.py, bench/claim_cost.py)
that stores what it measured on `Run`, and a function of `rows_for` that turns it into the
table's rows; targets are in bench/targets.py. How to add one: bench/phases.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import `bench` and `integration` from the root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx
import orjson
import psutil

from bench import (
    big_batches,
    claim_cost,
    floor,
    isolation,
    payloads,
    procs,
    pyspy,
    servers,
    targets,
    wrk,
)
from bench.cpu import CpuWatch, machine_busy
from bench.procs import ROOT, Child, Children
from bench.report import Row, ms, num, ratio, table
from bench.stats import percentile

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
        )


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

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- measuring --------------------------------------------------------------------------


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


# --- phases -----------------------------------------------------------------------------


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


def inbound_bare(run: Run, children: Children, key: str = "bare") -> None:
    """The bare endpoint, measured before ours (`bare`) and again after (`bare_after`): the
    ratio uses both, so that drift of a shared machine during ours' run weighs on both sides."""
    plan = run.plan
    port = procs.free_port()
    bare = children.python("bare", "-m", "bench.bare_app", "--port", str(port))
    url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"
    try:
        procs.wait_http(url, bare)
        warm_up(run, port, "bare")
        run.say(f"bare: single messages, -c{plan.connections} -d{plan.seconds}s")
        result, cpu = measure_wrk(
            run,
            url,
            bare,
            prefix=f"b{run.run_id}",
            seconds=plan.seconds,
            connections=plan.connections,
        )
        run.results[key] = {**wrk_summary(result), "cpu": cpu, "rss_mb": bare.peak_rss_mb()}
        run.say(f"bare: {result.rps:,.0f} req/s, p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms")
    finally:
        bare.stop()


def check_rows(run: Run, before: int, result: wrk.WrkResult, per_request: int) -> dict[str, Any]:
    rows = settled_events(run) - before
    expected = result.ok * per_request
    return {"rows": rows, "expected": expected, "difference": rows - expected}


def inbound_ours(run: Run, children: Children, serve: Child, port: int) -> None:
    plan = run.plan
    url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"

    warm_up(run, port)
    before = settled_events(run)
    run.say(f"ours: single messages, -c{plan.connections} -d{plan.seconds}s")
    single, cpu = measure_wrk(
        run,
        url,
        serve,
        prefix=f"s{run.run_id}",
        seconds=plan.seconds,
        connections=plan.connections,
    )
    rows = check_rows(run, before, single, 1)
    run.results["single"] = {
        **wrk_summary(single),
        "cpu": cpu,
        "rows": rows,
        "rss_mb": serve.peak_rss_mb(),
    }
    run.say(
        f"ours: {single.rps:,.0f} req/s, p50 {single.p50:.1f} ms, p99 {single.p99:.1f} ms;"
        f" 2xx {single.ok:,}, rows {rows['rows']:,}"
    )

    before = settled_events(run)
    run.say(f"ours: batches of {plan.batch_size}, -c{plan.batch_connections} -d{plan.seconds}s")
    batch, cpu = measure_wrk(
        run,
        url,
        serve,
        prefix=f"m{run.run_id}",
        seconds=plan.seconds,
        connections=plan.batch_connections,
        batch=plan.batch_size,
    )
    rows = check_rows(run, before, batch, plan.batch_size)
    run.results["batch"] = {
        **wrk_summary(batch),
        "cpu": cpu,
        "rows": rows,
        "events_per_s": rows["rows"] / batch.duration_s,
    }
    run.say(f"ours: batch {rows['rows'] / batch.duration_s:,.0f} events/s, {batch.rps:,.1f} req/s")

    target = single.rps / 2
    pace_ms = paced_wait(run, url, target)
    before = settled_events(run)
    run.say(f"ours: paced at {target:,.0f} req/s ({pace_ms} ms average wait per connection)")
    paced, cpu = measure_wrk(
        run,
        url,
        serve,
        prefix=f"p{run.run_id}",
        seconds=plan.paced_seconds,
        connections=plan.connections,
        pace_ms=pace_ms,
    )
    rows = check_rows(run, before, paced, 1)
    run.results["paced"] = {
        **wrk_summary(paced),
        "cpu": cpu,
        "rows": rows,
        "target_rps": target,
        "pace_ms": pace_ms,
    }
    run.results["rss_inbound_mb"] = serve.peak_rss_mb()
    run.say(f"ours: paced {paced.rps:,.0f} req/s, p50 {paced.p50:.1f} ms, p99 {paced.p99:.1f} ms")


def postgres_floor(run: Run) -> None:
    """The batch phase's rows written by COPY, without HTTP: the physical limit here."""
    checkpoint(run)
    run.say(f"Postgres floor: {run.plan.floor_events:,} events by COPY")
    watch = CpuWatch({}, run.postmaster)
    measured = floor.measure(run.db_url, run.plan.floor_events)
    run.results["floor"] = {
        "events": measured.events,
        "seconds": measured.seconds,
        "events_per_s": measured.events_per_s,
        "cpu": watch.stop(),
    }
    run.say(f"Postgres floor: {measured.events_per_s:,.0f} events/s")


def inbound_big_batches(run: Run, port: int) -> None:
    """Webhooks (Actions) requests of 4,000 events, signed over their first event, into an
    environment with a signing secret; every 2xx must be 4,000 rows."""
    secret = "bench-actions-" + secrets.token_hex(8)
    created = servers.create_environment(run.env, "bench-actions")
    servers.cli(run.env, "env", "set", "bench-actions", "--signing-secret", secret)
    url = f"http://127.0.0.1:{port}/webhooks/segment/{created['webhook_key']}"
    checkpoint(run)
    run.say(f"ours: {run.plan.big_batches} requests of 4,000 events, one after another")
    result = big_batches.send(url, secret, run.plan.big_batches, f"bb{run.run_id}")
    rows = servers.query(
        run.db_url,
        "SELECT count(*) FROM events e JOIN environments v ON v.id = e.environment_id"
        " WHERE v.name = 'bench-actions'",
    )
    run.results["big_batches"] = {
        "requests": len(result.seconds),
        "p50_s": percentile(result.seconds, 50),
        "p99_s": percentile(result.seconds, 99),
        "max_s": max(result.seconds, default=None),
        "non2xx": sum(1 for s in result.statuses if s != 200),
        "body_mb": result.body_bytes / 1e6,
        "rows": int(rows) - big_batches.EVENTS_PER_REQUEST,  # the warm-up request's
        "expected": result.events,
    }
    run.say(
        f"ours: 4,000-event requests p50 {run.results['big_batches']['p50_s']:.2f} s,"
        f" p99 {run.results['big_batches']['p99_s']:.2f} s"
    )


def paced_wait(run: Run, url: str, target: float) -> int:
    """The average wait between a connection's requests that gives `target` requests/s in all.
    Each connection waits, then sends and waits for the answer, so its cycle is the wait plus
    the latency: a short trial run measures that latency and the wait is shortened by it."""
    connections = run.plan.connections
    cycle_ms = 1000 * connections / target if target > 0 else 1000
    trial = wrk.run(
        url,
        template=run.template,
        prefix=f"pt{run.run_id}",
        seconds=run.plan.warmup,
        connections=connections,
        pace_ms=max(1, round(cycle_ms)),
    )
    latency_ms = connections / trial.rps * 1000 - cycle_ms if trial.rps > 0 else 0
    return max(1, round(cycle_ms - max(0.0, latency_ms)))


def inbound_two_processes(run: Run, children: Children) -> None:
    """Both servers again, each as two processes on one port (`--workers 2`): how either would
    run on a machine with cores to spare. Here the two cores are shared with wrk and Postgres,
    so this shows what a second process buys when the machine is the limit."""
    plan = run.plan
    servers_argv = {
        "bare": ["-m", "bench.bare_app", "--workers", "2"],
        "serve": ["-m", "integration", "serve", "--workers", "2"],
    }
    out: dict[str, Any] = {}
    for name, argv in servers_argv.items():
        port = procs.free_port()
        child = children.python(f"{name}-2", *argv, "--port", str(port))
        url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"
        try:
            procs.wait_http(url, child)
            warm_up(run, port, name)
            workers = {
                f"{name} process {i}": p.pid
                for i, p in enumerate(psutil.Process(child.pid).children(), start=1)
            }
            run.say(f"{name}, two processes: single messages, -c{plan.connections}")
            result, cpu = measure_wrk(
                run,
                url,
                child,
                prefix=f"t{name}{run.run_id}",
                seconds=plan.seconds,
                connections=plan.connections,
                processes=workers,
            )
            out[name] = {**wrk_summary(result), "cpu": cpu, "processes": len(workers)}
            run.say(f"{name}, two processes: {result.rps:,.0f} req/s")
        finally:
            child.stop()
    run.results["two_processes"] = out


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


def profile_inbound(run: Run, serve: Child, port: int) -> None:
    """py-spy on the server while wrk sends single messages (after the measured phases)."""
    plan = run.plan
    url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"
    out = RESULTS / "profile-inbound.speedscope.json"
    run.say(f"profile: py-spy on the server for {plan.profile_seconds}s under single-message load")
    native = True
    for _ in range(2):
        out.unlink(missing_ok=True)
        spy, spy_command = pyspy.record(serve.pid, plan.profile_seconds, out, native=native)
        watch = CpuWatch({serve.name: serve.pid}, run.postmaster)
        try:
            result = wrk.run(
                url,
                template=run.template,
                prefix=f"f{run.run_id}",
                seconds=plan.profile_seconds + 2,
                connections=plan.connections,
            )
            cpu = watch.stop()
            _, err = spy.communicate(timeout=60)
        finally:
            if spy.poll() is None:
                spy.kill()
        if spy.returncode == 0 and out.exists():
            break
        reason = err.decode(errors="replace").strip()[-2000:]
        if not native:
            raise RuntimeError(f"py-spy failed: {reason}")
        run.say(f"profile: py-spy --native failed ({reason[-200:]}); again, Python frames only")
        native = False
    summary = pyspy.summarise(out, native=native)
    command = " ".join(result.command[:-5])
    text = [
        f"# Inbound hot path profile ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()})",
        "",
        f"`{' '.join(['py-spy', *spy_command[1:]])}` on `python -m integration serve`"
        f" while `{command} …` sent"
        f" single track messages: {result.rps:,.0f} req/s, p50 {ms(result.p50)},"
        f" p99 {ms(result.p99)} under the profiler. CPU (% of one core): {cpu_text(cpu)}.",
        "",
        f"Open `{out.name}` in https://www.speedscope.app/ for the flame graph.",
        "",
        summary.markdown(),
    ]
    (RESULTS / "profile-inbound.md").write_text("\n".join(text))
    run.results["profile"] = {"samples": summary.samples, "rps": result.rps, "cpu": cpu}
    run.say(f"profile: {summary.samples} samples -> bench/results/profile-inbound.md")


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


def outbound(run: Run, children: Children, serve: Child, port: int) -> None:
    """Phases 6-8: the peer library, then ours, to the sink; then ours' latency."""
    worker = start_worker(run, children)
    outbound_peer(run)
    common = [
        "--base",
        f"http://127.0.0.1:{port}",
        "--env",
        run.env_id,
        "--token",
        run.env["ADMIN_TOKEN"],
    ]
    outbound_ours(run, serve, worker, common)
    outbound_latency(run, common)
    run.results["rss_run_mb"] = serve.peak_rss_mb()
    run.results["worker_rss_mb"] = worker.peak_rss_mb()
    run.results["sink_refused"] = sink_stats(run)["refused"]


def outbound_peer(run: Run) -> None:
    """Segment's own Python library sending N events straight to the sink: the yardstick."""
    n = run.plan.outbound_n
    run.say(f"peer: segment-analytics-python sending {n:,} events")
    peer = helper(
        run,
        "peer",
        [
            "bench.peer",
            "--host",
            run.sink_url,
            "--write-key",
            run.peer_write_key,
            "--n",
            str(n),
            "--tag",
            f"peer:{run.run_id}",
        ],
        timeout=240,
    )
    tally = wait_for_tag(run, "peer", min(n, int(peer["accepted"])), timeout=30)
    elapsed = (tally["last"] or peer["t_flushed"]) - peer["t0"]
    run.results["peer"] = {
        **peer,
        "delivered": tally["unique"],
        "duplicates": tally["messages"] - tally["unique"],
        "seconds": elapsed,
        "events_per_s": tally["unique"] / elapsed if elapsed > 0 else None,
    }
    run.say(f"peer: {tally['unique']:,} of {n:,} delivered in {elapsed:.2f}s")


def outbound_ours(run: Run, serve: Child, worker: Child, common: list[str]) -> None:
    """The same N events published through our API, the worker delivering them."""
    plan, n = run.plan, run.plan.outbound_n
    run.say(f"ours: publishing {n:,} events in lists of {plan.per_request}, worker delivering")
    checkpoint(run)
    watch = CpuWatch({serve.name: serve.pid, worker.name: worker.pid}, run.postmaster)
    published = helper(
        run,
        "publisher-throughput",
        [
            "bench.publisher",
            "throughput",
            *common,
            "--n",
            str(n),
            "--tag",
            f"ob:{run.run_id}",
            "--per-request",
            str(plan.per_request),
            "--concurrency",
            str(plan.publish_concurrency),
        ],
        timeout=240,
    )
    tally = wait_for_tag(run, "ob", n, timeout=180)
    cpu = watch.stop()
    elapsed = (tally["last"] or time.time()) - published["t0"]
    run.results["ours_out"] = {
        **published,
        "delivered": tally["unique"],
        "duplicates": tally["messages"] - tally["unique"],
        "seconds": elapsed,
        "publish_seconds": published["t_end"] - published["t0"],
        "events_per_s": tally["unique"] / elapsed if elapsed > 0 else None,
        "cpu": cpu,
    }
    run.say(f"ours: {tally['unique']:,} of {n:,} delivered in {elapsed:.2f}s")


def outbound_latency(run: Run, common: list[str]) -> None:
    """Publish → delivered at a steady 1,000 events/s."""
    plan = run.plan
    run.say(f"latency: 1,000 events/s for {plan.latency_seconds}s")
    times_file = DATA / "logs" / run.run_id / "latency-published.json"
    lat = helper(
        run,
        "publisher-latency",
        [
            "bench.publisher",
            "latency",
            *common,
            "--seconds",
            str(plan.latency_seconds),
            "--tag",
            f"lat:{run.run_id}",
            "--out",
            str(times_file),
        ],
        timeout=2 * plan.latency_seconds + 120,
    )
    tally = wait_for_tag(run, "lat", int(lat["acked"]), timeout=60)
    received: dict[str, float] = httpx.get(
        f"{run.sink_url}/times", params={"tag": "lat"}, timeout=30
    ).json()
    (times_file.parent / "latency-received.json").write_bytes(orjson.dumps(received))
    times = orjson.loads(times_file.read_bytes())
    scheduled: dict[str, float] = times["scheduled"]
    sent: dict[str, float] = times["published"]
    acked: dict[str, float] = times["acked"]
    delays = [received[m] - t for m, t in sent.items() if m in received]
    from_schedule = [received[m] - t for m, t in scheduled.items() if m in received]
    publish_ms = [1000 * (acked[m] - t) for m, t in sent.items() if m in acked]
    after_ack_ms = [1000 * (received[m] - t) for m, t in acked.items() if m in received]
    achieved = lat["published"] / lat["send_span"] if lat["send_span"] > 0 else None
    wanted = 1000 * lat["scheduled"] / (plan.latency_seconds * 1000)

    def pct_ms(values: list[float], p: float) -> float | None:
        value = percentile(values, p)
        return None if value is None else 1000 * value

    run.results["latency"] = {
        **lat,
        "delivered": tally["unique"],
        "missing": len(sent) - len(delays),
        "wanted_rate": wanted,
        "rate": achieved,
        "p50_ms": pct_ms(delays, 50),
        "p99_ms": pct_ms(delays, 99),
        "max_ms": 1000 * max(delays) if delays else None,
        "scheduled_p50_ms": pct_ms(from_schedule, 50),
        "scheduled_p99_ms": pct_ms(from_schedule, 99),
        "publish_p50_ms": percentile(publish_ms, 50),
        "publish_p99_ms": percentile(publish_ms, 99),
        "after_ack_p50_ms": percentile(after_ack_ms, 50),
        "after_ack_p99_ms": percentile(after_ack_ms, 99),
    }
    r = run.results["latency"]
    run.say(
        f"latency: {num(r['rate'])} events/s achieved, p50 {ms(r['p50_ms'])},"
        f" p99 {ms(r['p99_ms'])}, skipped {r['skipped']}, missing {r['missing']}"
    )


@dataclass
class IsolationSwitch:
    """The isolation phase's hands on this run (bench/isolation.py's Switch): two more
    environments, `bench-other` (its Segment the bench's sink, streaming throughout) and
    `bench-hung` (its Segment the hung sink, streaming only in hung windows); each window the
    one of its mode publishes at a fifth of the bench environment's rate."""

    run: Run
    children: Children
    token: list[str]
    envs: dict[str, str]  # mode -> the second environment's id

    def set_stream(self, env: str, url: str | None) -> None:
        if url is None:
            servers.cli(self.run.env, "env", "set", env, "--stream", "off")
            return
        servers.cli(
            self.run.env,
            "env",
            "set",
            env,
            "--write-key",
            self.run.peer_write_key,
            "--segment-api-url",
            url,
            "--stream",
            "on",
        )

    def publish_window(self, mode: str, index: int) -> isolation.Window:
        run, seconds = self.run, self.run.plan.isolation_seconds
        tag = f"iso{index}"
        other = self.children.python(
            f"publisher-other-{tag}",
            "-m",
            "bench.publisher",
            "latency",
            *self.token,
            "--env",
            self.envs[mode],
            "--seconds",
            str(seconds),
            "--per-tick",
            "2",
            "--tag",
            f"other{tag}:{run.run_id}",
            "--out",
            str(DATA / "logs" / run.run_id / f"other-{tag}.json"),
        )
        got = publish_latency(run, [*self.token, "--env", run.env_id], tag, seconds)
        other.proc.wait(seconds + 120)
        window = isolation.Window(mode, got.delays_ms, got.published, got.missing)
        run.say(f"isolation ({mode}): p99 {ms(window.p99_ms)}")
        return window


def isolation_phase(run: Run, children: Children, port: int) -> None:
    """Issue #23: the bench environment's latency while another's Segment hangs, against the
    same with that Segment healthy, in interleaved windows of one run (bench/isolation.py)."""
    start_worker(run, children)
    hang_port = procs.free_port()
    hung_url = f"http://127.0.0.1:{hang_port}"
    hang = children.python(
        "sink-hung",
        "-m",
        "bench.sink_app",
        "--port",
        str(hang_port),
        "--write-key",
        run.peer_write_key,
        "--hang-seconds",
        "60",
    )
    procs.wait_http(f"{hung_url}/stats", hang)
    envs = {
        mode: servers.create_environment(run.env, name)["id"]
        for mode, name in ((isolation.HEALTHY, "bench-other"), (isolation.HUNG, "bench-hung"))
    }
    switch = IsolationSwitch(
        run,
        children,
        ["--base", f"http://127.0.0.1:{port}", "--token", run.env["ADMIN_TOKEN"]],
        envs,
    )
    switch.set_stream("bench-other", run.sink_url)
    try:
        run.isolated = isolation.measure(
            switch,
            pairs=run.plan.isolation_pairs,
            hung_url=hung_url,
            settle=lambda: isolation.settle(run.db_url, timeout=60),
            say=run.say,
        )
    finally:
        # The hung environment's rows would keep the worker busy through the later phases.
        switch.set_stream("bench-hung", None)
        switch.set_stream("bench-other", None)


@dataclass(frozen=True)
class Published:
    published: int
    delivered: int
    missing: int
    delays_ms: list[float]


def publish_latency(run: Run, common: list[str], tag: str, seconds: int) -> Published:
    """Publish at 1,000 events/s for `seconds`; each event's publish→delivered delay."""
    times_file = DATA / "logs" / run.run_id / f"{tag}-published.json"
    lat = helper(
        run,
        f"publisher-{tag}",
        [
            "bench.publisher",
            "latency",
            *common,
            "--seconds",
            str(seconds),
            "--tag",
            f"{tag}:{run.run_id}",
            "--out",
            str(times_file),
        ],
        timeout=2 * seconds + 120,
    )
    tally = wait_for_tag(run, tag, int(lat["acked"]), timeout=60)
    received: dict[str, float] = httpx.get(
        f"{run.sink_url}/times", params={"tag": tag}, timeout=30
    ).json()
    sent: dict[str, float] = orjson.loads(times_file.read_bytes())["published"]
    delays = [1000 * (received[m] - t) for m, t in sent.items() if m in received]
    return Published(lat["published"], tally["unique"], len(sent) - len(delays), delays)


def ordered_claim(run: Run, server_url: str) -> None:
    """What per-person order costs the delivery claim (bench/claim_cost.py), on a database of
    its own: in the run's, what the earlier phases left in the outbox decided the figure."""
    run.say("claim: per-person order against the claim without it")
    run.claims = claim_cost.measure_fresh(server_url)
    cost = run.claims.many
    run.say(f"claim: {cost.ordered_ms:.1f} ms ordered, {cost.unordered_ms:.1f} ms without")


def intake_throughput(
    run: Run, tag: str, host: str, key: str, watch: CpuWatch | None, threads: int = 1
) -> dict[str, Any]:
    """analytics-python sending N events to `host` with `key`, as fast as it goes; done once the
    sink holds them all (through us: after the worker delivered them)."""
    n = run.plan.intake_n
    sent = helper(
        run,
        f"intake-{tag}",
        [
            "bench.intake_client",
            "throughput",
            "--host",
            host,
            "--write-key",
            key,
            "--n",
            str(n),
            "--tag",
            f"{tag}:{run.run_id}",
            "--threads",
            str(threads),
        ],
        timeout=600,
    )
    tally = wait_for_tag(run, tag, n, timeout=300)
    cpu = watch.stop() if watch else None
    elapsed = (tally["last"] or time.time()) - sent["t0"]
    return {
        **sent,
        "delivered": tally["unique"],
        "duplicates": tally["messages"] - tally["unique"],
        "seconds": elapsed,
        "events_per_s": tally["unique"] / elapsed if elapsed > 0 else None,
        "cpu": cpu,
    }


def intake_latency(run: Run, tag: str, host: str, key: str) -> dict[str, Any]:
    """analytics-python calling track() at 1,000 events/s: each event's time from its track()
    call to its first arrival at the sink."""
    seconds = run.plan.intake_latency_seconds
    times_file = DATA / "logs" / run.run_id / f"intake-latency-{tag}.json"
    called_info = helper(
        run,
        f"intake-latency-{tag}",
        [
            "bench.intake_client",
            "latency",
            "--host",
            host,
            "--write-key",
            key,
            "--seconds",
            str(seconds),
            "--tag",
            f"{tag}:{run.run_id}",
            "--out",
            str(times_file),
        ],
        timeout=2 * seconds + 300,
    )
    tally = wait_for_tag(run, tag, int(called_info["called"]), timeout=120)
    received: dict[str, float] = httpx.get(
        f"{run.sink_url}/times", params={"tag": tag}, timeout=30
    ).json()
    called: dict[str, float] = orjson.loads(times_file.read_bytes())
    delays = [received[m] - t for m, t in called.items() if m in received]
    return {
        **called_info,
        "delivered": tally["unique"],
        "missing": len(called) - len(delays),
        "p50_ms": None if not delays else 1000 * (percentile(delays, 50) or 0),
        "p99_ms": None if not delays else 1000 * (percentile(delays, 99) or 0),
        "max_ms": 1000 * max(delays) if delays else None,
    }


INTAKE_THREADS = 4


def intake(run: Run, children: Children, serve: Child, port: int) -> None:
    """Issue #12's bench: Segment's own Python library through our /v1/batch, against the same
    library posting straight to the sink, in the same run: what durability costs."""
    worker = start_worker(run, children)
    ours, sink = f"http://127.0.0.1:{port}", run.sink_url
    n = run.plan.intake_n
    run.say(f"intake: analytics-python sending {n:,} events straight to the sink")
    checkpoint(run)
    direct = intake_throughput(run, "ipd", sink, run.peer_write_key, None)
    run.say(
        f"intake: direct {num(direct['events_per_s'])} events/s"
        f" (flush() returned after {direct['t_flushed'] - direct['t0']:.2f} s)"
    )
    run.say(f"intake: analytics-python sending {n:,} events through /v1/batch, worker delivering")
    checkpoint(run)
    watch = CpuWatch({serve.name: serve.pid, worker.name: worker.pid}, run.postmaster)
    through = intake_throughput(run, "ipo", ours, run.source_key, watch)
    run.say(
        f"intake: through us {num(through['events_per_s'])} events/s (flush() returned after"
        f" {through['t_flushed'] - through['t0']:.2f} s); CPU (% of one core)"
        f" {cpu_text(through['cpu'])}"
    )
    # The library sends one batch at a time and waits for its answer: with a few consumer
    # threads on both sides, what our answer's time costs shows apart from what we can take.
    run.say(f"intake: both again with {INTAKE_THREADS} consumer threads each")
    checkpoint(run)
    direct_threads = intake_throughput(
        run, "ipdt", sink, run.peer_write_key, None, threads=INTAKE_THREADS
    )
    checkpoint(run)
    through_threads = intake_throughput(
        run, "ipot", ours, run.source_key, None, threads=INTAKE_THREADS
    )
    run.say(
        f"intake, {INTAKE_THREADS} threads: direct {num(direct_threads['events_per_s'])},"
        f" through us {num(through_threads['events_per_s'])} events/s"
    )
    seconds = run.plan.intake_latency_seconds
    run.say(f"intake: track() to the sink at 1,000 events/s for {seconds}s, directly")
    lat_direct = intake_latency(run, "ild", sink, run.peer_write_key)
    run.say(f"intake: track() to the sink at 1,000 events/s for {seconds}s, through us")
    lat_ours = intake_latency(run, "ilo", ours, run.source_key)
    run.results["intake"] = {
        "direct": direct,
        "ours": through,
        "latency_direct": lat_direct,
        "latency_ours": lat_ours,
        "direct_threads": direct_threads,
        "ours_threads": through_threads,
    }
    run.say(
        f"intake: latency p50/p99 direct {ms(lat_direct['p50_ms'])}/{ms(lat_direct['p99_ms'])},"
        f" through us {ms(lat_ours['p50_ms'])}/{ms(lat_ours['p99_ms'])}"
    )


# --- report -----------------------------------------------------------------------------


def cpu_per_request(phase: dict[str, Any] | None, server: str, *, only: bool = False) -> float:
    """CPU milliseconds one request cost: the server's share plus Postgres's (or, with `only`,
    just `server`'s; a server of several processes counts them all). On a machine shared with
    the load generator this, not requests/s, bounds what more cores could give."""
    if not phase or not phase.get("rps"):
        return 0.0
    cpu = phase.get("cpu", {})
    own = sum(v for k, v in cpu.items() if k == server or k.startswith(f"{server} process "))
    percent = own + (0.0 if only else cpu.get("postgres", 0.0))
    return float(percent) / 100 / float(phase["rps"]) * 1000


def rows_for(run: Run) -> list[Row]:
    """The report's table: each phase's rows, in the order the phases run."""
    return [
        *single_rows(run),
        *two_process_rows(run),
        *batch_rows(run),
        *paced_rows(run),
        *big_batch_rows(run),
        *rss_row(run, "rss_inbound_mb", "server peak RSS after all inbound phases"),
        *outbound_rows(run),
        *latency_rows(run),
        *(isolation.rows(run.isolated, events_per_s=1000) if run.isolated else []),
        *(claim_cost.rows(run.claims) if run.claims else []),
        *intake_rows(run),
        *rss_row(run, "rss_run_mb", "server peak RSS over the whole run"),
    ]


def bare_rps(run: Run) -> tuple[float | None, str]:
    """Bare's requests/s for the ratio (the mean of before and after ours), and as shown."""
    bare, after = run.results.get("bare"), run.results.get("bare_after")
    rps = bare["rps"] if bare else None
    text = num(rps)
    if rps and after:
        text = f"{num((rps + after['rps']) / 2)} (before {text}, after {num(after['rps'])})"
        rps = (rps + after["rps"]) / 2
    return rps, text


def single_rows(run: Run) -> list[Row]:
    res, plan = run.results, run.plan
    bare, single = res.get("bare"), res.get("single")
    if not single:
        return []
    ours_rps, (yard_rps, yard_text) = single["rps"], bare_rps(run)
    ours_cpu, bare_cpu = cpu_per_request(single, "serve"), cpu_per_request(bare, "bare")
    diff = single["rows"]["difference"]
    rss, bare_rss = single["rss_mb"], bare["rss_mb"] if bare else None
    return [
        Row(
            f"inbound single message: requests/s (-c{plan.connections}, {plan.seconds}s)",
            num(ours_rps),
            yard_text,
            ratio(ours_rps, yard_rps),
            targets.SINGLE_VS_BARE.text,
            yard_rps is not None and targets.SINGLE_VS_BARE.at_least(ours_rps, yard_rps),
        ),
        compared("inbound single: p50 latency", single, bare, "p50_ms"),
        compared("inbound single: p99 latency", single, bare, "p99_ms"),
        Row(
            "inbound single: CPU per request, server + Postgres (all cores)",
            f"{ours_cpu:.3f} ms",
            f"{bare_cpu:.3f} ms" if bare_cpu else "n/a",
            ratio(ours_cpu, bare_cpu),
        ),
        Row(
            "inbound single: non-2xx responses",
            num(single["non2xx"]),
            num(bare["non2xx"]) if bare else "n/a",
            "—",
            "0",
            single["non2xx"] == 0,
        ),
        Row(
            "inbound single: 2xx counted by wrk / rows in events (difference)",
            f"{num(single['ok'])} / {num(single['rows']['rows'])} ({diff:+d})",
            "—",
            "—",
            f"every 2xx stored; extra ≤ {plan.connections} in flight",
            0 <= diff <= plan.connections,
        ),
        Row(
            "server peak RSS (VmHWM) after the single-message run",
            f"{num(rss)} MB",
            f"{num(bare_rss)} MB" if bare_rss else "n/a",
            ratio(rss, bare_rss),
            targets.SERVER_RSS_MB.text,
            targets.SERVER_RSS_MB.at_most(rss),
        ),
    ]


def compared(metric: str, ours: dict[str, Any], bare: dict[str, Any] | None, key: str) -> Row:
    """A latency of ours against bare's."""
    theirs = bare[key] if bare else None
    return Row(metric, ms(ours[key]), ms(theirs) if bare else "n/a", ratio(ours[key], theirs))


def two_process_rows(run: Run) -> list[Row]:
    two = run.results.get("two_processes")
    if not two or "serve" not in two:
        return []
    ours2, bare2 = two["serve"], two.get("bare")
    bare2_rps = bare2["rps"] if bare2 else None
    ours2_cpu, bare2_cpu = cpu_per_request(ours2, "serve"), cpu_per_request(bare2, "bare")
    return [
        Row(
            "inbound single, two server processes each (`--workers 2`): requests/s",
            num(ours2["rps"]),
            num(bare2_rps),
            ratio(ours2["rps"], bare2_rps),
        ),
        Row(
            "inbound single, two processes each: CPU per request, server + Postgres",
            f"{ours2_cpu:.3f} ms",
            f"{bare2_cpu:.3f} ms" if bare2_cpu else "n/a",
            ratio(ours2_cpu, bare2_cpu),
        ),
    ]


def batch_rows(run: Run) -> list[Row]:
    res, plan = run.results, run.plan
    batch = res.get("batch")
    if not batch:
        return []
    check = batch["rows"]
    floor_eps = (res.get("floor") or {}).get("events_per_s")
    wanted = targets.BATCH_EVENTS_PER_S
    bound = min(wanted.bound, targets.BATCH_VS_FLOOR * floor_eps) if floor_eps else wanted.bound
    per_event = cpu_per_request(batch, "serve") / plan.batch_size
    postgres = cpu_per_request(batch, "postgres", only=True) / plan.batch_size
    extra = plan.batch_connections * plan.batch_size
    return [
        Row(
            f"inbound batch of {plan.batch_size}: events/s committed (-c{plan.batch_connections})",
            num(batch["events_per_s"]),
            f"{num(floor_eps)} (Postgres floor: the same rows by COPY)" if floor_eps else "—",
            ratio(batch["events_per_s"], floor_eps),
            f"{wanted.text} ({num(bound)})",
            batch["events_per_s"] >= bound,
        ),
        Row(
            "inbound batch: CPU per event, server + Postgres (of which Postgres)",
            f"{per_event:.3f} ms ({postgres:.3f} ms)",
        ),
        Row(
            "inbound batch: requests/s, p50 / p99",
            f"{num(batch['rps'], 1)}, {ms(batch['p50_ms'])} / {ms(batch['p99_ms'])}",
        ),
        Row(
            "inbound batch: messages in 2xx / rows in events (difference)",
            f"{num(check['expected'])} / {num(check['rows'])} ({check['difference']:+d})",
            "—",
            "—",
            f"every 2xx stored; extra ≤ {extra}",
            0 <= check["difference"] <= extra,
        ),
    ]


def paced_rows(run: Run) -> list[Row]:
    paced = run.results.get("paced")
    if not paced:
        return []
    return [
        Row(
            f"inbound paced at 50% of peak: achieved req/s (target {num(paced['target_rps'])})",
            num(paced["rps"]),
            "—",
            ratio(paced["rps"], paced["target_rps"]),
        ),
        Row(
            "inbound paced: p50 / p99 latency",
            f"{ms(paced['p50_ms'])} / {ms(paced['p99_ms'])}",
            "—",
            "—",
            targets.PACED_P99_MS.text,
            targets.PACED_P99_MS.at_most(paced["p99_ms"]),
        ),
    ]


def big_batch_rows(run: Run) -> list[Row]:
    big = run.results.get("big_batches")
    if not big:
        return []
    return [
        Row(
            f"inbound 4,000-event requests ({big['body_mb']:.1f} MB, signed over the first"
            f" event, {big['requests']} in a row): p50 / p99 / max time to answer",
            f"{big['p50_s']:.2f} s / {big['p99_s']:.2f} s / {big['max_s']:.2f} s",
            "—",
            "—",
            targets.BIG_BATCH_P99_S.text,
            targets.BIG_BATCH_P99_S.at_most(big["p99_s"])
            and big["non2xx"] == 0
            and big["rows"] == big["expected"],
        )
    ]


def rss_row(run: Run, key: str, metric: str) -> list[Row]:
    rss = run.results.get(key)
    if rss is None:
        return []
    target = targets.SERVER_RSS_MB
    return [Row(metric, f"{num(rss)} MB", "—", "—", target.text, target.at_most(rss))]


def outbound_rows(run: Run) -> list[Row]:
    peer, ours = run.results.get("peer"), run.results.get("ours_out")
    if not (ours or peer):
        return []
    n = run.plan.outbound_n
    ours_eps = ours["events_per_s"] if ours else None
    peer_eps = peer["events_per_s"] if peer else None
    return [
        Row(
            f"outbound: events/s, first publish → sink holds them (N = {n:,})",
            num(ours_eps),
            num(peer_eps) + " (segment-analytics-python)",
            ratio(ours_eps, peer_eps),
        ),
        Row(
            "outbound: events delivered to the sink (of N)",
            f"{num(ours['delivered'])} in {ours['seconds']:.1f} s" if ours else "n/a",
            f"{num(peer['delivered'])} in {peer['seconds']:.1f} s" if peer else "n/a",
            "—",
            f"all {n:,}",
            ours is not None and ours["delivered"] == n,
        ),
    ]


def latency_rows(run: Run) -> list[Row]:
    lat = run.results.get("latency")
    if not lat:
        return []
    return [
        Row(
            f"outbound: publish → delivered latency, p50 / p99 (10 events every 10 ms:"
            f" {num(lat['wanted_rate'])} events/s wanted, {num(lat['rate'])} achieved)",
            f"{ms(lat['p50_ms'])} / {ms(lat['p99_ms'])}",
            "—",
            "—",
            targets.PUBLISH_P99_MS.text,
            targets.PUBLISH_P99_MS.at_most(lat["p99_ms"])
            and lat["missing"] == 0
            and lat["skipped"] == 0
            and (lat["rate"] or 0) >= 0.9 * lat["wanted_rate"],
        )
    ]


def intake_rows(run: Run) -> list[Row]:
    got = run.results.get("intake")
    if not got:
        return []
    ours, direct = got["ours"], got["direct"]
    lat, lat_direct = got["latency_ours"], got["latency_direct"]
    n = run.plan.intake_n
    eps, direct_eps = ours["events_per_s"], direct["events_per_s"]
    return [
        Row(
            f"intake: events/s, analytics-python through /v1/batch → sink (N = {n:,})",
            num(eps),
            num(direct_eps) + " (the same library straight to the sink)",
            ratio(eps, direct_eps),
            targets.INTAKE_VS_DIRECT.text,
            direct_eps is not None and targets.INTAKE_VS_DIRECT.at_least(eps, direct_eps),
        ),
        Row(
            "intake: events delivered to the sink (of N), duplicates",
            f"{num(ours['delivered'])} in {ours['seconds']:.1f} s, {ours['duplicates']}",
            f"{num(direct['delivered'])} in {direct['seconds']:.1f} s, {direct['duplicates']}",
            "—",
            f"all {n:,}",
            ours["delivered"] == n,
        ),
        Row(
            f"intake, {INTAKE_THREADS} consumer threads on both sides: events/s",
            num(got["ours_threads"]["events_per_s"]),
            num(got["direct_threads"]["events_per_s"]),
            ratio(got["ours_threads"]["events_per_s"], got["direct_threads"]["events_per_s"]),
        ),
        Row(
            f"intake: track() → sink latency, p50 / p99 (1,000 events/s wanted,"
            f" {num(lat['rate'])} achieved)",
            f"{ms(lat['p50_ms'])} / {ms(lat['p99_ms'])}",
            f"{ms(lat_direct['p50_ms'])} / {ms(lat_direct['p99_ms'])}",
            ratio(lat["p99_ms"], lat_direct["p99_ms"]),
            targets.INTAKE_P99_MS.text,
            targets.INTAKE_P99_MS.below(lat["p99_ms"]) and lat["missing"] == 0,
        ),
    ]


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


def details(run: Run, srv_notes: list[str]) -> str:
    res = run.results
    out: list[str] = ["## Details", ""]
    out += [f"- {note}" for note in srv_notes]
    out.append(
        f"- Postgres {res.get('postgres_version', '?')}; messages are Segment track calls of about"
        f" {res.get('message_bytes', '?')} bytes (bench/payloads.py), userIds from"
        f" {payloads.USERS:,} users, company_id from {payloads.COMPANIES} companies."
    )
    out.append(
        "- Both servers: uvicorn, factory app, log_config=None, access_log=False,"
        " server_header=False, one process (two, with `--workers 2`, in the rows that say so);"
        " product with LOG_LEVEL=WARNING."
    )
    for part in (
        wrk_details,
        single_detail,
        peer_detail,
        ours_detail,
        latency_detail,
        intake_detail,
    ):
        out += part(run)
    if run.isolated:
        out.append(f"- {isolation.details(run.isolated)}")
    if refused := res.get("sink_refused"):
        out.append(f"- The sink refused: {refused}")
    if "worker_rss_mb" in res:
        out.append(f"- Worker peak RSS: {num(res['worker_rss_mb'])} MB.")
    out += [f"- {note}" for note in run.notes]
    if run.errors:
        out += ["", "## Errors", ""] + [f"```\n{e}\n```" for e in run.errors]
    return "\n".join(out) + "\n"


def wrk_details(run: Run) -> list[str]:
    """Each wrk run's command, percentiles, answers and CPU."""
    res = run.results
    out: list[str] = []
    two = res.get("two_processes", {})
    for r, label in (
        (res.get("bare"), "bare"),
        (res.get("bare_after"), "bare, again after ours"),
        (res.get("single"), "ours, single"),
        (res.get("batch"), "ours, batch"),
        (res.get("paced"), "ours, paced"),
        (two.get("bare"), "bare, two processes"),
        (two.get("serve"), "ours, two processes"),
    ):
        if r:
            pcts = ", ".join(f"p{p} {ms(v)}" for p, v in sorted(r["percentiles_ms"].items()))
            errs = {k: v for k, v in r["socket_errors"].items() if v}
            stored = (
                f" rows stored {r['rows']['rows']:,} for {r['rows']['expected']:,} messages in 2xx;"
                if "rows" in r
                else ""
            )
            out.append(
                f"- {label}: `{r['command']}` → {r['requests']:,} requests in"
                f" {r['duration_s']:.1f} s; {pcts}; 2xx {r['ok']:,}, non-2xx {r['non2xx']:,}"
                f" {r['statuses'] or ''}; socket errors {errs or 'none'};{stored}"
                f" CPU (% of one core): {cpu_text(r.get('cpu'))}"
            )
    return out


def single_detail(run: Run) -> list[str]:
    """What the single-message check's difference means."""
    res, plan = run.results, run.plan
    out: list[str] = []
    if single := res.get("single"):
        diff = single["rows"]["difference"]
        if diff == 0:
            why = "every 2xx is exactly one row, and nothing else was stored."
        elif 0 < diff <= plan.connections:
            why = (
                f"{diff} more rows than 2xx: requests still in flight when wrk stopped were"
                f" committed without their answer being counted (at most one per connection,"
                f" {plan.connections})."
            )
        elif diff < 0:
            why = f"{-diff} answers were 2xx without a row: acknowledged but not stored."
        else:
            why = (
                f"{diff} more rows than 2xx, more than the {plan.connections} connections explain."
            )
        out.append(f"- Single-message check: {why}")
    return out


def peer_detail(run: Run) -> list[str]:
    """What the peer library accepted, dropped and delivered."""
    res, plan = run.results, run.plan
    out: list[str] = []
    if peer := res.get("peer"):
        dropped = plan.outbound_n - int(peer["accepted"])
        out.append(
            f"- Peer (segment-analytics-python, default settings): track() accepted"
            f" {peer['accepted']:,} of {plan.outbound_n:,} into its in-memory queue"
            f" ({dropped:,} dropped: the default max_queue_size is 10,000 and a full queue drops);"
            f" all {plan.outbound_n:,} track() calls took {peer['t_tracked'] - peer['t0']:.2f} s,"
            f" flush() returned after {peer['t_flushed'] - peer['t0']:.2f} s;"
            f" the sink got {peer['delivered']:,} ({peer['duplicates']} duplicates)."
            " Its events/s is delivered events over the time to the last one."
        )
    return out


def ours_detail(run: Run) -> list[str]:
    """How our outbound throughput phase went."""
    res, plan = run.results, run.plan
    out: list[str] = []
    if ours := res.get("ours_out"):
        out.append(
            f"- Ours: {ours['requests']} publish requests of {plan.per_request},"
            f" {plan.publish_concurrency} in flight, took {ours['publish_seconds']:.2f} s"
            f" ({ours['queued']:,} queued, failures {ours['failures'] or 'none'}, network errors"
            f" retried {ours.get('retried') or 'none'}); one worker;"
            f" the sink had all of them {ours['seconds']:.2f} s after the first publish"
            f" ({ours['duplicates']} duplicates). CPU: {cpu_text(ours.get('cpu'))}."
        )
    return out


def latency_detail(run: Run) -> list[str]:
    """The latency phase's schedule and its split."""
    res, plan = run.results, run.plan
    out: list[str] = []
    if lat := res.get("latency"):
        out.append(
            f"- Latency phase: {lat['scheduled']:,} events scheduled in lists of 10 every 10 ms"
            f" over {plan.latency_seconds} s, at most 32 publish requests in flight;"
            f" {lat['published']:,} sent over {lat['send_span']:.1f} s"
            f" ({num(lat['rate'])} events/s achieved), {lat['skipped']:,} skipped because they"
            f" could not be sent within {plan.latency_seconds} s of their time;"
            f" failures {lat['failures'] or 'none'}. Latency = sink's first receipt - time the"
            f" publish request was sent; max {ms(lat['max_ms'])}; {lat['missing']} never arrived."
            f" Counted from the scheduled time instead (the backlog included): p50"
            f" {ms(lat['scheduled_p50_ms'])} / p99 {ms(lat['scheduled_p99_ms'])}."
            f" Split: the publish request itself took p50 {ms(lat['publish_p50_ms'])} / p99"
            f" {ms(lat['publish_p99_ms'])}; from its 202 to the sink, p50"
            f" {ms(lat['after_ack_p50_ms'])} / p99 {ms(lat['after_ack_p99_ms'])}."
            f" Network errors retried: {lat.get('retried') or 'none'}."
        )
    return out


def intake_detail(run: Run) -> list[str]:
    """How the intake's phase went, both ways."""
    res, plan = run.results, run.plan
    out: list[str] = []
    if got := res.get("intake"):
        ours, direct = got["ours"], got["direct"]
        out.append(
            "- Intake: analytics-python's Client(key, host=...), track(), flush(),"
            f" with max_queue_size raised so it drops nothing (defaults otherwise: batches of"
            f" 100, one thread); {plan.intake_n:,} events. Through us: track() calls took"
            f" {ours['t_tracked'] - ours['t0']:.2f} s, flush() returned after"
            f" {ours['t_flushed'] - ours['t0']:.2f} s (every batch acknowledged after its"
            f" commit), the sink had all {ours['delivered']:,} after {ours['seconds']:.2f} s."
            f" Directly: flush() after {direct['t_flushed'] - direct['t0']:.2f} s, all after"
            f" {direct['seconds']:.2f} s. CPU through us: {cpu_text(ours.get('cpu'))}."
            f" Latency: track() call to first arrival at the sink; max"
            f" {ms(got['latency_ours']['max_ms'])} through us,"
            f" {ms(got['latency_direct']['max_ms'])} directly;"
            f" {got['latency_ours']['missing']} never arrived through us."
        )
    return out


def background(run: Run) -> str:
    """How much of the machine other processes took: it skews every figure on 2 cores."""
    res = run.results
    parts = [f"{res.get('busy_before', 0):.0f}% of one core just before the run"]
    during = [
        r["cpu"]["other processes"]
        for key in ("bare", "bare_after", "single", "batch", "paced", "ours_out")
        if (r := res.get(key)) and "other processes" in r.get("cpu", {})
    ]
    if during:
        parts.append(
            f"{sum(during) / len(during):.0f}% on average during the measured phases"
            f" (max {max(during):.0f}%, of {100 * (os.cpu_count() or 1)}%)"
        )
    return "; ".join(parts)


def write_report(run: Run, srv_notes: list[str]) -> str:
    header = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Commit: {commit()}",
        f"- Machine: {os.cpu_count()} cores (os.cpu_count()), {platform.machine()},"
        f" Python {platform.python_version()}; load generator wrk on the same machine",
        f"- Whole run: {time.monotonic() - run.started:.0f} s",
        f"- Load from other processes: {background(run)}",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    typed = {
        "claim_cost": run.claims,
        "isolation": run.isolated.summary() if run.isolated else None,
    }
    (RESULTS / "latest.json").write_bytes(
        orjson.dumps({**run.results, **typed}, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    body = table(rows_for(run))
    text = "\n".join(header) + "\n" + body + "\n" + details(run, srv_notes)
    tmp = RESULTS / "latest.md.tmp"
    tmp.write_text(text)
    tmp.replace(RESULTS / "latest.md")
    return body


# --- main -------------------------------------------------------------------------------


def prune_logs(keep: int) -> None:
    """Logs of the last few runs stay in .data-bench/logs/; older ones go."""
    logs = DATA / "logs"
    if logs.is_dir():
        runs = sorted((p for p in logs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - keep)]:
            shutil.rmtree(old, ignore_errors=True)


def attempt(run: Run, name: str, phase: Callable[[], None]) -> bool:
    """Run a phase; a failure is reported and the run goes on with what it can still do."""
    try:
        phase()
        return True
    except Exception:
        run.errors.append(f"{name} failed:\n{traceback.format_exc()}")
        run.say(f"{name} FAILED (see the report)")
        return False


ONLY = ("profile_only", "inbound_only", "outbound_only", "intake_only", "isolation_only")


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases, to try the suite")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the inbound hot path with py-spy"
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only profile the inbound hot path (bench/results/profile-inbound.*);"
        " leaves latest.md alone",
    )
    leaves = "; prints the table and leaves bench/results/ alone"
    for name, what in (
        ("inbound", "the inbound phases"),
        ("outbound", "the outbound phases"),
        ("intake", "the /v1 intake's phase (analytics-python through us and directly)"),
        ("isolation", "the isolation phase (issue #23: another environment's Segment hangs)"),
    ):
        parser.add_argument(f"--{name}-only", action="store_true", help=f"only {what}{leaves}")
    parser.add_argument("--seconds", type=int, help="length of each measured wrk run")
    return parser.parse_args()


def run_phases(run: Run, args: argparse.Namespace, children: Children, server_url: str) -> None:
    """The phases the options ask for, in order, each inside `attempt`."""
    only = {name for name in ONLY if getattr(args, name)}
    everything = not only
    if everything or "inbound_only" in only:
        attempt(run, "inbound (bare)", lambda: inbound_bare(run, children))
    port = procs.free_port()
    serve = children.python("serve", "-m", "integration", "serve", "--port", str(port))
    procs.wait_http(f"http://127.0.0.1:{port}/healthz", serve)
    if "profile_only" in only:
        warm_up(run, port)
    if everything or "inbound_only" in only:
        attempt(run, "inbound (ours)", lambda: inbound_ours(run, children, serve, port))
        attempt(run, "inbound (4,000-event requests)", lambda: inbound_big_batches(run, port))
        attempt(run, "Postgres floor", lambda: postgres_floor(run))
        attempt(run, "inbound (bare again)", lambda: inbound_bare(run, children, "bare_after"))
        attempt(run, "two processes each", lambda: inbound_two_processes(run, children))
    if everything or "outbound_only" in only:
        attempt(run, "outbound", lambda: outbound(run, children, serve, port))
        attempt(run, "ordered claim", lambda: ordered_claim(run, server_url))
    if everything or only & {"outbound_only", "isolation_only"}:
        attempt(run, "isolation", lambda: isolation_phase(run, children, port))
    if everything or only & {"outbound_only", "intake_only"}:
        attempt(run, "intake", lambda: intake(run, children, serve, port))
    # Last: the load it adds (and the vacuuming that follows) must not skew a measured phase.
    if args.profile or "profile_only" in only:
        attempt(run, "profile", lambda: profile_inbound(run, serve, port))


def main() -> int:
    args = options()
    run = Run(plan=Plan.quick() if args.quick else Plan())
    if args.seconds:
        run.plan.seconds = run.plan.paced_seconds = args.seconds
    if args.quick:
        run.notes.append("--quick: short phases; numbers are indicative only.")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    prune_logs(keep=5)
    children = Children(log_dir=DATA / "logs" / run.run_id)
    srv: servers.Servers | None = None
    database: str | None = None
    srv_notes: list[str] = []
    try:
        run.results["busy_before"] = machine_busy()
        run.say(f"machine busy before the run: {run.results['busy_before']:.0f}% of one core")
        run.say("starting Postgres and Redis")
        srv = servers.start(DATA)
        srv_notes = srv.notes
        setup(run, children, srv)
        database = run.results["database"]
        run_phases(run, args, children, srv.postgres_url)
    except Exception:
        run.errors.append(f"setup failed:\n{traceback.format_exc()}")
        run.say("FAILED (see the report)")
    finally:
        run.say("stopping everything")
        children.stop_all()
        if srv is not None:
            if database:
                try:
                    servers.drop_database(srv.postgres_url, database)
                except Exception as exc:
                    run.notes.append(f"could not drop database {database}: {exc}")
            srv.stop()
    if any(getattr(args, name) for name in ONLY):
        if not args.profile_only:
            print(table(rows_for(run)))
        if run.isolated:
            print(isolation.details(run.isolated))
        for error in run.errors:
            print(error, file=sys.stderr)
        return 1 if run.errors else 0
    body = write_report(run, srv_notes)
    print(body)
    print(f"written to {RESULTS / 'latest.md'}", file=sys.stderr)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
