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
            5c. what issue #25's identity guards cost identify/alias-heavy batches, against
            the path before them, interleaved (bench/identity_cost.py, its own database).
            5d. a user with 10,000 anonymousIds and another's 10,000 merged in: their pages
            and the unmerge (bench/identity_growth.py, its own database and server).
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

This module runs the phases and writes the report. What they share (the plan, the run, the
measuring helpers) is bench/context.py; the phases, each with the rows and details of its
report, are bench/inbound.py, bench/outbound.py (with bench/claim_cost.py and
bench/isolation.py) and bench/intake_phase.py; every target is in bench/targets.py. How to add
a phase: bench/phases.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import `bench` and `integration` from the root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

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
    targets,
)
from bench.context import DATA, RESULTS, Plan, Run, commit, setup, warm_up
from bench.cpu import machine_busy
from bench.inbound import (
    batch_rows,
    big_batch_rows,
    identity_growth_phase,
    identity_guards,
    inbound_bare,
    inbound_big_batches,
    inbound_ours,
    inbound_two_processes,
    paced_rows,
    postgres_floor,
    profile_inbound,
    single_detail,
    single_rows,
    two_process_rows,
    wrk_details,
)
from bench.intake_phase import intake, intake_detail, intake_rows
from bench.outbound import (
    isolation_phase,
    latency_detail,
    latency_rows,
    ordered_claim,
    ours_detail,
    outbound,
    outbound_rows,
    peer_detail,
)
from bench.procs import Children
from bench.report import Row, num, table


def rows_for(run: Run) -> list[Row]:
    """The report's table: each phase's rows, in the order the phases run."""
    return [
        *single_rows(run),
        *two_process_rows(run),
        *batch_rows(run),
        *paced_rows(run),
        *big_batch_rows(run),
        *rss_row(run, "rss_inbound_mb", "server peak RSS after all inbound phases"),
        *(identity_cost.rows(run.identity_guards) if run.identity_guards else []),
        *(identity_growth.rows(run.big_identity) if run.big_identity else []),
        *outbound_rows(run),
        *latency_rows(run),
        *(isolation.rows(run.isolated, events_per_s=1000) if run.isolated else []),
        *(claim_cost.rows(run.claims) if run.claims else []),
        *(mapping_cost.rows(run.mapping) if run.mapping else []),
        *intake_rows(run),
        *rss_row(run, "rss_run_mb", "server peak RSS over the whole run"),
    ]


def rss_row(run: Run, key: str, metric: str) -> list[Row]:
    rss = run.results.get(key)
    if rss is None:
        return []
    target = targets.SERVER_RSS_MB
    return [Row(metric, f"{num(rss)} MB", "—", "—", target.text, target.at_most(rss))]


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


def background(run: Run) -> str:
    """How much of the machine other processes took: it skews every figure on 2 cores."""
    res = run.results
    parts = [f"{res.get('busy_before', 0):.0f}% of one core just before the run"]
    got = run.inbound
    measured = [got.bare, got.bare_after, got.single, got.batch, got.paced]
    cpus = [r.cpu for r in measured if r]
    if run.ours_out:
        cpus.append(run.ours_out.cpu)
    during = [cpu["other processes"] for cpu in cpus if "other processes" in cpu]
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
        **run.inbound.as_json(),
        "peer": run.peer,
        "ours_out": run.ours_out,
        "latency": run.latency,
        "intake": run.intake,
        "claim_cost": run.claims,
        "mapping_cost": run.mapping,
        "identity_guards": run.identity_guards.summary() if run.identity_guards else None,
        "identity_growth": run.big_identity.summary() if run.big_identity else None,
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


def measure_mapping(run: Run) -> None:
    run.say("mapping cost: a 10-field mapping and its trigger, per event")
    run.mapping = mapping_cost.measure(quick=run.plan.mapping_quick)


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
        attempt(run, "inbound (bare again)", lambda: inbound_bare(run, children, after=True))
        attempt(run, "two processes each", lambda: inbound_two_processes(run, children))
        attempt(run, "identity guards", lambda: identity_guards(run, server_url))
        attempt(run, "identity growth", lambda: identity_growth_phase(run, children, server_url))
    if everything or "outbound_only" in only:
        attempt(run, "outbound", lambda: outbound(run, children, serve, port))
        attempt(run, "ordered claim", lambda: ordered_claim(run, server_url))
        attempt(run, "mapping cost", lambda: measure_mapping(run))
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
