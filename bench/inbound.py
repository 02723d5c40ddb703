"""The inbound phases (1-5d): wrk against the bare endpoint and against ours, the Postgres
floor, the 4,000-event requests, two processes each, what the identity guards cost and a user
with 10,000 anonymousIds (each on a database of its own), the profile; their rows and
details."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import psutil

from bench import (
    big_batches,
    floor,
    identity_cost,
    identity_growth,
    procs,
    pyspy,
    servers,
    targets,
    wrk,
)
from bench.context import (
    RESULTS,
    BigRun,
    FloorRun,
    Run,
    WrkRun,
    checkpoint,
    commit,
    cpu_per_request,
    cpu_text,
    measure_wrk,
    rows_check,
    settled_events,
    warm_up,
)
from bench.cpu import CpuWatch
from bench.procs import Child, Children
from bench.report import Row, ms, num, ratio
from bench.stats import percentile


def inbound_bare(run: Run, children: Children, *, after: bool = False) -> None:
    """The bare endpoint, measured before ours and again `after`: the ratio uses both, so that
    drift of a shared machine during ours' run weighs on both sides."""
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
        measured = WrkRun.of(result, cpu, rss_mb=bare.peak_rss_mb())
        if after:
            run.inbound.bare_after = measured
        else:
            run.inbound.bare = measured
        run.say(f"bare: {result.rps:,.0f} req/s, p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms")
    finally:
        bare.stop()


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
    rows = rows_check(run, before, single, 1)
    run.inbound.single = WrkRun.of(single, cpu, rows=rows, rss_mb=serve.peak_rss_mb())
    run.say(
        f"ours: {single.rps:,.0f} req/s, p50 {single.p50:.1f} ms, p99 {single.p99:.1f} ms;"
        f" 2xx {single.ok:,}, rows {rows.rows:,}"
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
    rows = rows_check(run, before, batch, plan.batch_size)
    events_per_s = rows.rows / batch.duration_s
    run.inbound.batch = WrkRun.of(batch, cpu, rows=rows, events_per_s=events_per_s)
    run.say(f"ours: batch {events_per_s:,.0f} events/s, {batch.rps:,.1f} req/s")

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
    rows = rows_check(run, before, paced, 1)
    run.inbound.paced = WrkRun.of(paced, cpu, rows=rows, target_rps=target, pace_ms=pace_ms)
    run.results["rss_inbound_mb"] = serve.peak_rss_mb()
    run.say(f"ours: paced {paced.rps:,.0f} req/s, p50 {paced.p50:.1f} ms, p99 {paced.p99:.1f} ms")


def postgres_floor(run: Run) -> None:
    """The batch phase's rows written by COPY, without HTTP: the physical limit here."""
    checkpoint(run)
    run.say(f"Postgres floor: {run.plan.floor_events:,} events by COPY")
    watch = CpuWatch({}, run.postmaster)
    measured = floor.measure(run.db_url, run.plan.floor_events)
    run.inbound.floor = FloorRun(
        measured.events, measured.seconds, measured.events_per_s, watch.stop()
    )
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
    big = run.inbound.big_batches = BigRun(
        len(result.seconds),
        percentile(result.seconds, 50) or 0.0,
        percentile(result.seconds, 99) or 0.0,
        max(result.seconds, default=0.0),
        sum(1 for s in result.statuses if s != 200),
        result.body_bytes / 1e6,
        int(rows) - big_batches.EVENTS_PER_REQUEST,  # the warm-up request's
        result.events,
    )
    run.say(f"ours: 4,000-event requests p50 {big.p50_s:.2f} s, p99 {big.p99_s:.2f} s")


def identity_guards(run: Run, server_url: str) -> None:
    """What issue #25's guards cost identify/alias-heavy batches (bench/identity_cost.py), on a
    database of its own, against the path before them, interleaved."""
    run.say(f"identity guards: {run.plan.identity_batches} batches of 500 each side, interleaved")
    run.identity_guards = identity_cost.measure_fresh(server_url, batches=run.plan.identity_batches)
    run.say(run.identity_guards.line())


def identity_growth_phase(run: Run, children: Children, server_url: str) -> None:
    """A user with 10,000 linked anonymousIds (bench/identity_growth.py): their pages and an
    unmerge, on a database and a server of its own."""
    run.say("identity growth: a user with 10,000 anonymousIds and another's 10,000 merged in")
    run.big_identity = identity_growth.measure_fresh(server_url, run.env["REDIS_URL"], children)
    run.say(run.big_identity.line())


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
            measured = WrkRun.of(result, cpu, processes=len(workers))
            if name == "bare":
                run.inbound.two_bare = measured
            else:
                run.inbound.two_serve = measured
            run.say(f"{name}, two processes: {result.rps:,.0f} req/s")
        finally:
            child.stop()


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


def bare_rps(run: Run) -> tuple[float | None, str]:
    """Bare's requests/s for the ratio (the mean of before and after ours), and as shown."""
    bare, after = run.inbound.bare, run.inbound.bare_after
    rps = bare.rps if bare else None
    text = num(rps)
    if rps and after:
        text = f"{num((rps + after.rps) / 2)} (before {text}, after {num(after.rps)})"
        rps = (rps + after.rps) / 2
    return rps, text


def single_rows(run: Run) -> list[Row]:
    plan = run.plan
    bare, single = run.inbound.bare, run.inbound.single
    if not single or not single.rows:
        return []
    ours_rps, (yard_rps, yard_text) = single.rps, bare_rps(run)
    ours_cpu, bare_cpu = cpu_per_request(single, "serve"), cpu_per_request(bare, "bare")
    diff = single.rows.difference
    rss, bare_rss = single.rss_mb, bare.rss_mb if bare else None
    return [
        Row(
            f"inbound single message: requests/s (-c{plan.connections}, {plan.seconds}s)",
            num(ours_rps),
            yard_text,
            ratio(ours_rps, yard_rps),
            targets.SINGLE_VS_BARE.text,
            yard_rps is not None and targets.SINGLE_VS_BARE.at_least(ours_rps, yard_rps),
        ),
        compared("inbound single: p50 latency", single.p50_ms, bare.p50_ms if bare else None),
        compared("inbound single: p99 latency", single.p99_ms, bare.p99_ms if bare else None),
        Row(
            "inbound single: CPU per request, server + Postgres (all cores)",
            f"{ours_cpu:.3f} ms",
            f"{bare_cpu:.3f} ms" if bare_cpu else "n/a",
            ratio(ours_cpu, bare_cpu),
        ),
        Row(
            "inbound single: non-2xx responses",
            num(single.non2xx),
            num(bare.non2xx) if bare else "n/a",
            "—",
            "0",
            single.non2xx == 0,
        ),
        Row(
            "inbound single: 2xx counted by wrk / rows in events (difference)",
            f"{num(single.ok)} / {num(single.rows.rows)} ({diff:+d})",
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


def compared(metric: str, ours: float, bare: float | None) -> Row:
    """A latency of ours against bare's."""
    return Row(metric, ms(ours), ms(bare) if bare is not None else "n/a", ratio(ours, bare))


def two_process_rows(run: Run) -> list[Row]:
    ours2, bare2 = run.inbound.two_serve, run.inbound.two_bare
    if not ours2:
        return []
    bare2_rps = bare2.rps if bare2 else None
    ours2_cpu, bare2_cpu = cpu_per_request(ours2, "serve"), cpu_per_request(bare2, "bare")
    return [
        Row(
            "inbound single, two server processes each (`--workers 2`): requests/s",
            num(ours2.rps),
            num(bare2_rps),
            ratio(ours2.rps, bare2_rps),
        ),
        Row(
            "inbound single, two processes each: CPU per request, server + Postgres",
            f"{ours2_cpu:.3f} ms",
            f"{bare2_cpu:.3f} ms" if bare2_cpu else "n/a",
            ratio(ours2_cpu, bare2_cpu),
        ),
    ]


def batch_rows(run: Run) -> list[Row]:
    plan, batch = run.plan, run.inbound.batch
    if not batch or not batch.rows or batch.events_per_s is None:
        return []
    check = batch.rows
    floor_eps = run.inbound.floor.events_per_s if run.inbound.floor else None
    wanted = targets.BATCH_EVENTS_PER_S
    bound = min(wanted.bound, targets.BATCH_VS_FLOOR * floor_eps) if floor_eps else wanted.bound
    per_event = cpu_per_request(batch, "serve") / plan.batch_size
    postgres = cpu_per_request(batch, "postgres", only=True) / plan.batch_size
    extra = plan.batch_connections * plan.batch_size
    return [
        Row(
            f"inbound batch of {plan.batch_size}: events/s committed (-c{plan.batch_connections})",
            num(batch.events_per_s),
            f"{num(floor_eps)} (Postgres floor: the same rows by COPY)" if floor_eps else "—",
            ratio(batch.events_per_s, floor_eps),
            f"{wanted.text} ({num(bound)})",
            batch.events_per_s >= bound,
        ),
        Row(
            "inbound batch: CPU per event, server + Postgres (of which Postgres)",
            f"{per_event:.3f} ms ({postgres:.3f} ms)",
        ),
        Row(
            "inbound batch: requests/s, p50 / p99",
            f"{num(batch.rps, 1)}, {ms(batch.p50_ms)} / {ms(batch.p99_ms)}",
        ),
        Row(
            "inbound batch: messages in 2xx / rows in events (difference)",
            f"{num(check.expected)} / {num(check.rows)} ({check.difference:+d})",
            "—",
            "—",
            f"every 2xx stored; extra ≤ {extra}",
            0 <= check.difference <= extra,
        ),
    ]


def paced_rows(run: Run) -> list[Row]:
    paced = run.inbound.paced
    if not paced or paced.target_rps is None:
        return []
    return [
        Row(
            f"inbound paced at 50% of peak: achieved req/s (target {num(paced.target_rps)})",
            num(paced.rps),
            "—",
            ratio(paced.rps, paced.target_rps),
        ),
        Row(
            "inbound paced: p50 / p99 latency",
            f"{ms(paced.p50_ms)} / {ms(paced.p99_ms)}",
            "—",
            "—",
            targets.PACED_P99_MS.text,
            targets.PACED_P99_MS.at_most(paced.p99_ms),
        ),
    ]


def big_batch_rows(run: Run) -> list[Row]:
    big = run.inbound.big_batches
    if not big:
        return []
    return [
        Row(
            f"inbound 4,000-event requests ({big.body_mb:.1f} MB, signed over the first"
            f" event, {big.requests} in a row): p50 / p99 / max time to answer",
            f"{big.p50_s:.2f} s / {big.p99_s:.2f} s / {big.max_s:.2f} s",
            "—",
            "—",
            targets.BIG_BATCH_P99_S.text,
            targets.BIG_BATCH_P99_S.at_most(big.p99_s)
            and big.non2xx == 0
            and big.rows == big.expected,
        )
    ]


def wrk_details(run: Run) -> list[str]:
    """Each wrk run's command, percentiles, answers and CPU."""
    got = run.inbound
    out: list[str] = []
    for r, label in (
        (got.bare, "bare"),
        (got.bare_after, "bare, again after ours"),
        (got.single, "ours, single"),
        (got.batch, "ours, batch"),
        (got.paced, "ours, paced"),
        (got.two_bare, "bare, two processes"),
        (got.two_serve, "ours, two processes"),
    ):
        if r:
            pcts = ", ".join(f"p{p} {ms(v)}" for p, v in sorted(r.percentiles_ms.items()))
            errs = {k: v for k, v in r.socket_errors.items() if v}
            stored = (
                f" rows stored {r.rows.rows:,} for {r.rows.expected:,} messages in 2xx;"
                if r.rows
                else ""
            )
            out.append(
                f"- {label}: `{r.command}` → {r.requests:,} requests in"
                f" {r.duration_s:.1f} s; {pcts}; 2xx {r.ok:,}, non-2xx {r.non2xx:,}"
                f" {r.statuses or ''}; socket errors {errs or 'none'};{stored}"
                f" CPU (% of one core): {cpu_text(r.cpu)}"
            )
    return out


def single_detail(run: Run) -> list[str]:
    """What the single-message check's difference means."""
    plan, single = run.plan, run.inbound.single
    out: list[str] = []
    if single and single.rows:
        diff = single.rows.difference
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
