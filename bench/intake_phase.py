"""The /v1 intake's phase (9, issue #12): Segment's own Python library through our /v1/batch,
against the same library posting straight to the sink; its rows and details."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import orjson

from bench import (
    targets,
)
from bench.context import (
    DATA,
    Run,
    checkpoint,
    cpu_text,
    helper,
    start_worker,
    wait_for_tag,
)
from bench.cpu import CpuWatch
from bench.procs import Child, Children
from bench.report import Row, ms, num, ratio
from bench.stats import percentile

INTAKE_THREADS = 4


@dataclass(frozen=True)
class Throughput:
    """N events sent as fast as the library goes, until the sink holds them all."""

    t0: float  # the first track() call (epoch seconds)
    t_tracked: float  # the last track() call returned
    t_flushed: float  # flush() returned
    accepted: int
    delivered: int
    duplicates: int
    seconds: float  # first track() → the sink holds them all
    events_per_s: float | None
    cpu: dict[str, float] | None


@dataclass(frozen=True)
class Latency:
    """track() at a steady rate: each event's time from its call to its first arrival."""

    t0: float
    t_last_call: float
    t_flushed: float
    called: int
    rate: float | None
    late_ticks: int
    delivered: int
    missing: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class Intake:
    direct: Throughput
    ours: Throughput
    latency_direct: Latency
    latency_ours: Latency
    direct_threads: Throughput
    ours_threads: Throughput


def intake_throughput(
    run: Run, tag: str, host: str, key: str, watch: CpuWatch | None, threads: int = 1
) -> Throughput:
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
    return Throughput(
        sent["t0"],
        sent["t_tracked"],
        sent["t_flushed"],
        sent["accepted"],
        tally["unique"],
        tally["messages"] - tally["unique"],
        elapsed,
        tally["unique"] / elapsed if elapsed > 0 else None,
        cpu,
    )


def intake_latency(run: Run, tag: str, host: str, key: str) -> Latency:
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
    return Latency(
        called_info["t0"],
        called_info["t_last_call"],
        called_info["t_flushed"],
        called_info["called"],
        called_info["rate"],
        called_info["late_ticks"],
        tally["unique"],
        len(called) - len(delays),
        None if not delays else 1000 * (percentile(delays, 50) or 0),
        None if not delays else 1000 * (percentile(delays, 99) or 0),
        1000 * max(delays) if delays else None,
    )


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
        f"intake: direct {num(direct.events_per_s)} events/s"
        f" (flush() returned after {direct.t_flushed - direct.t0:.2f} s)"
    )
    run.say(f"intake: analytics-python sending {n:,} events through /v1/batch, worker delivering")
    checkpoint(run)
    watch = CpuWatch({serve.name: serve.pid, worker.name: worker.pid}, run.postmaster)
    through = intake_throughput(run, "ipo", ours, run.source_key, watch)
    run.say(
        f"intake: through us {num(through.events_per_s)} events/s (flush() returned after"
        f" {through.t_flushed - through.t0:.2f} s); CPU (% of one core)"
        f" {cpu_text(through.cpu)}"
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
        f"intake, {INTAKE_THREADS} threads: direct {num(direct_threads.events_per_s)},"
        f" through us {num(through_threads.events_per_s)} events/s"
    )
    seconds = run.plan.intake_latency_seconds
    run.say(f"intake: track() to the sink at 1,000 events/s for {seconds}s, directly")
    lat_direct = intake_latency(run, "ild", sink, run.peer_write_key)
    run.say(f"intake: track() to the sink at 1,000 events/s for {seconds}s, through us")
    lat_ours = intake_latency(run, "ilo", ours, run.source_key)
    run.intake = Intake(direct, through, lat_direct, lat_ours, direct_threads, through_threads)
    run.say(
        f"intake: latency p50/p99 direct {ms(lat_direct.p50_ms)}/{ms(lat_direct.p99_ms)},"
        f" through us {ms(lat_ours.p50_ms)}/{ms(lat_ours.p99_ms)}"
    )


def intake_rows(run: Run) -> list[Row]:
    got = run.intake
    if not got:
        return []
    ours, direct = got.ours, got.direct
    lat, lat_direct = got.latency_ours, got.latency_direct
    n = run.plan.intake_n
    eps, direct_eps = ours.events_per_s, direct.events_per_s
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
            f"{num(ours.delivered)} in {ours.seconds:.1f} s, {ours.duplicates}",
            f"{num(direct.delivered)} in {direct.seconds:.1f} s, {direct.duplicates}",
            "—",
            f"all {n:,}",
            ours.delivered == n,
        ),
        Row(
            f"intake, {INTAKE_THREADS} consumer threads on both sides: events/s",
            num(got.ours_threads.events_per_s),
            num(got.direct_threads.events_per_s),
            ratio(got.ours_threads.events_per_s, got.direct_threads.events_per_s),
        ),
        Row(
            f"intake: track() → sink latency, p50 / p99 (1,000 events/s wanted,"
            f" {num(lat.rate)} achieved)",
            f"{ms(lat.p50_ms)} / {ms(lat.p99_ms)}",
            f"{ms(lat_direct.p50_ms)} / {ms(lat_direct.p99_ms)}",
            ratio(lat.p99_ms, lat_direct.p99_ms),
            targets.INTAKE_P99_MS.text,
            targets.INTAKE_P99_MS.below(lat.p99_ms) and lat.missing == 0,
        ),
    ]


def intake_detail(run: Run) -> list[str]:
    """How the intake's phase went, both ways."""
    plan = run.plan
    out: list[str] = []
    if got := run.intake:
        ours, direct = got.ours, got.direct
        out.append(
            "- Intake: analytics-python's Client(key, host=...), track(), flush(),"
            f" with max_queue_size raised so it drops nothing (defaults otherwise: batches of"
            f" 100, one thread); {plan.intake_n:,} events. Through us: track() calls took"
            f" {ours.t_tracked - ours.t0:.2f} s, flush() returned after"
            f" {ours.t_flushed - ours.t0:.2f} s (every batch acknowledged after its"
            f" commit), the sink had all {ours.delivered:,} after {ours.seconds:.2f} s."
            f" Directly: flush() after {direct.t_flushed - direct.t0:.2f} s, all after"
            f" {direct.seconds:.2f} s. CPU through us: {cpu_text(ours.cpu)}."
            f" Latency: track() call to first arrival at the sink; max"
            f" {ms(got.latency_ours.max_ms)} through us,"
            f" {ms(got.latency_direct.max_ms)} directly;"
            f" {got.latency_ours.missing} never arrived through us."
        )
    return out
