"""The inbound phases on plain Postgres and on a Citus cluster, in the same run: `make
bench-citus`, or `python -m bench.citus`.

For each of the two databases (plain: BENCH_DATABASE_URL, else the embedded Postgres; Citus:
CITUS_DATABASE_URL, the local cluster's coordinator that `make bench-citus` starts), the same
steps as `make bench`'s inbound phases: a fresh database migrated by `migrate` (distributed on
Citus), an environment made with the CLI, `python -m integration serve`, then with wrk
1. single track messages (-c64) and 2. batches of 100 (-c16); every 2xx must be one row in
`events`. The plain database goes first, then Citus, then plain again, so that drift of the
shared machine weighs on both sides; the ratio is Citus over the mean of the two plain runs.

Writes bench/results/citus.md (the table and what was run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
import psutil

from bench import procs, servers
from bench.context import (
    DATA,
    RESULTS,
    Plan,
    Run,
    check_rows,
    commit,
    measure_wrk,
    settled_events,
    setup,
    warm_up,
    wrk_summary,
)
from bench.cpu import machine_busy, tree_cpu_seconds
from bench.procs import Children
from bench.report import Row, ms, num, ratio, table
from tests.citus_cluster import COORDINATOR, WORKERS
from tests.citus_cluster import DATA as DATA_CITUS


def postmasters() -> dict[str, int]:
    """The local cluster's servers (the plain database lives on the coordinator's)."""
    found: dict[str, int] = {}
    for name, port in (("coordinator", COORDINATOR), *((f"worker {p}", p) for p in WORKERS)):
        pid_file = DATA_CITUS / str(port) / "postmaster.pid"
        if pid_file.exists():
            found[name] = int(pid_file.read_text().split()[0])
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            seconds[name] = tree_cpu_seconds(psutil.Process(pid))
        except psutil.Error:
            continue
    return seconds


def inbound(run: Run, serve: procs.Child, port: int) -> dict[str, Any]:
    plan = run.plan
    url = f"http://127.0.0.1:{port}/webhooks/segment/{run.webhook_key}"
    warm_up(run, port)
    results: dict[str, Any] = {}
    for phase, connections, batch in (
        ("single", plan.connections, 1),
        ("batch", plan.batch_connections, plan.batch_size),
    ):
        before = settled_events(run)
        pids = {**postmasters(), "API process": serve.pid}
        cpu_before = cpu_seconds(pids)
        run.say(f"{phase}: -c{connections} -d{plan.seconds}s, {batch} per request")
        result, _ = measure_wrk(
            run,
            url,
            serve,
            prefix=f"{phase[0]}{run.run_id}",
            seconds=plan.seconds,
            connections=connections,
            batch=batch,
        )
        cpu_after = cpu_seconds(pids)
        rows = check_rows(run, before, result, batch)
        results[phase] = {
            **wrk_summary(result),
            "rows": rows,
            "events_per_s": rows["rows"] / result.duration_s,
            # CPU seconds per 1,000 events stored, of each server (its whole process tree).
            "cpu_per_1000": {
                name: (cpu_after[name] - cpu_before[name]) * 1000 / max(rows["rows"], 1)
                for name in cpu_after
                if name in cpu_before
            },
        }
        run.say(
            f"{phase}: {result.rps:,.0f} req/s, {rows['rows'] / result.duration_s:,.0f} events/s,"
            f" p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms; rows off by {rows['difference']}"
        )
    return results


def one(name: str, plan: Plan, server_url: str | None) -> dict[str, Any]:
    """The inbound phases on one database server (None: the embedded Postgres)."""
    run = Run(plan=plan)
    children = Children(log_dir=DATA / "logs" / f"citus-{run.run_id}")
    saved = os.environ.get("BENCH_DATABASE_URL")
    if server_url:
        os.environ["BENCH_DATABASE_URL"] = server_url
    srv: servers.Servers | None = None
    try:
        run.say(f"{name}: starting")
        srv = servers.start(DATA)
        setup(run, children, srv)
        port = procs.free_port()
        serve = children.python("serve", "-m", "integration", "serve", "--port", str(port))
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", serve)
        return {"name": name, **inbound(run, serve, port), "errors": run.errors}
    except Exception:
        return {"name": name, "errors": [traceback.format_exc()]}
    finally:
        children.stop_all()
        if srv is not None:
            if database := run.results.get("database"):
                servers.drop_database(srv.postgres_url, database)
            srv.stop()
        if saved is None:
            os.environ.pop("BENCH_DATABASE_URL", None)
        else:
            os.environ["BENCH_DATABASE_URL"] = saved


CPU_COLUMNS = ("API process", "coordinator", *(f"worker {p}" for p in WORKERS))


def _mean(runs: list[dict[str, Any]], phase: str, key: str) -> float | None:
    values = [r[phase][key] for r in runs if phase in r]
    return sum(values) / len(values) if values else None


def rows_for(plain: list[dict[str, Any]], citus: dict[str, Any], plan: Plan) -> list[Row]:
    rows: list[Row] = []
    for phase, label in (("single", "single messages"), ("batch", "batches of 100")):
        if phase not in citus:
            continue
        ours, yard = citus[phase], _mean(plain, phase, "events_per_s")
        rows.append(
            Row(
                f"inbound {label}: events/s (Citus vs plain Postgres)",
                num(ours["events_per_s"]),
                num(yard),
                ratio(ours["events_per_s"], yard),
            )
        )
        rows.append(
            Row(
                f"inbound {label}: p50 / p99",
                f"{ms(ours['p50_ms'])} / {ms(ours['p99_ms'])}",
                f"{ms(_mean(plain, phase, 'p50_ms'))} / {ms(_mean(plain, phase, 'p99_ms'))}",
            )
        )
        # Requests still in flight when wrk stops are stored without being counted as 2xx.
        in_flight = plan.connections if phase == "single" else plan.batch_connections
        in_flight *= 1 if phase == "single" else plan.batch_size
        kept = all(
            0 <= r[phase]["rows"]["difference"] <= in_flight for r in [*plain, citus] if phase in r
        )
        rows.append(
            Row(
                f"inbound {label}: every 2xx stored (rows - 2xx, Citus)",
                f"{citus[phase]['rows']['difference']:+d}",
                target=f"0 to +{in_flight} (in flight at the end)",
                met=kept,
            )
        )
    return rows


def report(plain: list[dict[str, Any]], citus: dict[str, Any], plan: Plan, busy: float) -> str:
    lines = [
        "# Inbound on plain Postgres and on Citus (`make bench-citus`)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, {platform.node()}:"
        f" {os.cpu_count()} cores shared by every process of the run (wrk, the API, and all"
        f" the Postgres servers); machine busy before the run: {busy:.0f}% of one core.",
        "",
        "Ours = the Citus cluster (coordinator and two workers, all on this machine);"
        " yardstick = plain Postgres (mean of the run before and the run after Citus).",
        "",
        table(rows_for(plain, citus, plan)),
        "",
        "| run | single: req/s | single: p50 / p99 | batch: events/s | batch: p50 / p99 |",
        "|---|---|---|---|---|",
    ]
    for r in [plain[0], citus, *plain[1:]]:
        if "single" in r and "batch" in r:
            s, b = r["single"], r["batch"]
            lines.append(
                f"| {r['name']} | {num(s['rps'])} | {ms(s['p50_ms'])} / {ms(s['p99_ms'])}"
                f" | {num(b['events_per_s'])} | {ms(b['p50_ms'])} / {ms(b['p99_ms'])} |"
            )
    lines += [
        "",
        "CPU seconds per 1,000 events stored (each server's whole process tree; on plain"
        " Postgres the coordinator's server is the plain one):",
        "",
        "| run | phase | " + " | ".join(CPU_COLUMNS) + " |",
        "|---|---|" + "---|" * len(CPU_COLUMNS),
    ]
    for r in [plain[0], citus, *plain[1:]]:
        for phase in ("single", "batch"):
            if phase in r:
                cpu = r[phase]["cpu_per_1000"]
                cells = " | ".join(f"{cpu[c]:.2f}" if c in cpu else "—" for c in CPU_COLUMNS)
                lines.append(f"| {r['name']} | {phase} | {cells} |")
    lines += [
        "",
        f"Each phase {plan.seconds} s after a {plan.warmup} s warm-up; single messages with"
        f" {plan.connections} connections, batches of {plan.batch_size} with"
        f" {plan.batch_connections}.",
    ]
    for r in [*plain, citus]:
        for error in r.get("errors", []):
            lines += ["", f"Error in {r['name']}:", "```", error, "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="each measured wrk run")
    parser.add_argument("--quick", action="store_true", help="5-second phases")
    args = parser.parse_args()
    coordinator = os.environ.get("CITUS_DATABASE_URL")
    if not coordinator:
        print(
            "bench.citus: CITUS_DATABASE_URL is not set (make bench-citus sets it)", file=sys.stderr
        )
        return 2
    plan = Plan.quick() if args.quick else Plan(seconds=args.seconds)
    busy = machine_busy()
    plain_url = os.environ.get("BENCH_DATABASE_URL")
    plain = [one("plain Postgres (before)", plan, plain_url)]
    citus = one("Citus", plan, coordinator)
    plain.append(one("plain Postgres (after)", plan, plain_url))
    body = report(plain, citus, plan, busy)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "citus.md").write_text(body)
    raw = {"plain": plain, "citus": citus, "seconds": plan.seconds}
    (RESULTS / "citus.json").write_bytes(
        orjson.dumps(raw, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    print(body)
    return 1 if any(r.get("errors") for r in [*plain, citus]) else 0


if __name__ == "__main__":
    sys.exit(main())
