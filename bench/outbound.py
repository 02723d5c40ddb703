"""The outbound phases (6-8c): Segment's own library and ours to the sink, publish → delivered
latency, the claim's cost, isolation; their rows and details."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import orjson

from bench import (
    claim_cost,
    isolation,
    procs,
    servers,
    targets,
)
from bench.context import (
    DATA,
    Run,
    checkpoint,
    cpu_text,
    helper,
    sink_stats,
    start_worker,
    wait_for_tag,
)
from bench.cpu import CpuWatch
from bench.procs import Child, Children
from bench.report import Row, ms, num, ratio
from bench.stats import percentile


@dataclass(frozen=True)
class Peer:
    """Segment's own Python library sending N events to the sink (bench/peer.py), and what the
    sink got."""

    t0: float  # the first track() call (epoch seconds)
    t_tracked: float
    t_flushed: float
    accepted: int  # into its in-memory queue (a full queue drops)
    delivered: int
    duplicates: int
    seconds: float  # first track() → the last event at the sink
    events_per_s: float | None


@dataclass(frozen=True)
class OursOut:
    """The same N events published through our API (bench/publisher.py), the worker
    delivering them."""

    t0: float  # the first publish request
    t_end: float  # the last publish request answered
    requests: int
    queued: int
    failures: dict[str, int]
    retried: dict[str, int]
    delivered: int
    duplicates: int
    seconds: float  # first publish → the sink holds them all
    publish_seconds: float
    events_per_s: float | None
    cpu: dict[str, float]


@dataclass(frozen=True)
class PublishLatency:
    """Publish → delivered at a steady rate (bench/publisher.py's latency mode)."""

    t0: float
    t_last_tick: float
    t_end: float
    scheduled: int
    published: int
    acked: int
    skipped: int
    send_span: float
    late_ticks: int
    failures: dict[str, int]
    retried: dict[str, int]
    delivered: int
    missing: int
    wanted_rate: float
    rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    scheduled_p50_ms: float | None  # counted from the scheduled time (the backlog included)
    scheduled_p99_ms: float | None
    publish_p50_ms: float | None  # the publish request itself
    publish_p99_ms: float | None
    after_ack_p50_ms: float | None  # from its 202 to the sink
    after_ack_p99_ms: float | None


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
    run.peer = Peer(
        peer["t0"],
        peer["t_tracked"],
        peer["t_flushed"],
        peer["accepted"],
        tally["unique"],
        tally["messages"] - tally["unique"],
        elapsed,
        tally["unique"] / elapsed if elapsed > 0 else None,
    )
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
    run.ours_out = OursOut(
        published["t0"],
        published["t_end"],
        published["requests"],
        published["queued"],
        published["failures"],
        published["retried"],
        tally["unique"],
        tally["messages"] - tally["unique"],
        elapsed,
        published["t_end"] - published["t0"],
        tally["unique"] / elapsed if elapsed > 0 else None,
        cpu,
    )
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

    r = run.latency = PublishLatency(
        lat["t0"],
        lat["t_last_tick"],
        lat["t_end"],
        lat["scheduled"],
        lat["published"],
        lat["acked"],
        lat["skipped"],
        lat["send_span"],
        lat["late_ticks"],
        lat["failures"],
        lat["retried"],
        tally["unique"],
        len(sent) - len(delays),
        wanted,
        achieved,
        pct_ms(delays, 50),
        pct_ms(delays, 99),
        1000 * max(delays) if delays else None,
        pct_ms(from_schedule, 50),
        pct_ms(from_schedule, 99),
        percentile(publish_ms, 50),
        percentile(publish_ms, 99),
        percentile(after_ack_ms, 50),
        percentile(after_ack_ms, 99),
    )
    run.say(
        f"latency: {num(r.rate)} events/s achieved, p50 {ms(r.p50_ms)},"
        f" p99 {ms(r.p99_ms)}, skipped {r.skipped}, missing {r.missing}"
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


def outbound_rows(run: Run) -> list[Row]:
    peer, ours = run.peer, run.ours_out
    if not (ours or peer):
        return []
    n = run.plan.outbound_n
    ours_eps = ours.events_per_s if ours else None
    peer_eps = peer.events_per_s if peer else None
    return [
        Row(
            f"outbound: events/s, first publish → sink holds them (N = {n:,})",
            num(ours_eps),
            num(peer_eps) + " (segment-analytics-python)",
            ratio(ours_eps, peer_eps),
        ),
        Row(
            "outbound: events delivered to the sink (of N)",
            f"{num(ours.delivered)} in {ours.seconds:.1f} s" if ours else "n/a",
            f"{num(peer.delivered)} in {peer.seconds:.1f} s" if peer else "n/a",
            "—",
            f"all {n:,}",
            ours is not None and ours.delivered == n,
        ),
    ]


def latency_rows(run: Run) -> list[Row]:
    lat = run.latency
    if not lat:
        return []
    return [
        Row(
            f"outbound: publish → delivered latency, p50 / p99 (10 events every 10 ms:"
            f" {num(lat.wanted_rate)} events/s wanted, {num(lat.rate)} achieved)",
            f"{ms(lat.p50_ms)} / {ms(lat.p99_ms)}",
            "—",
            "—",
            targets.PUBLISH_P99_MS.text,
            targets.PUBLISH_P99_MS.at_most(lat.p99_ms)
            and lat.missing == 0
            and lat.skipped == 0
            and (lat.rate or 0) >= 0.9 * lat.wanted_rate,
        )
    ]


def peer_detail(run: Run) -> list[str]:
    """What the peer library accepted, dropped and delivered."""
    plan = run.plan
    out: list[str] = []
    if peer := run.peer:
        dropped = plan.outbound_n - peer.accepted
        out.append(
            f"- Peer (segment-analytics-python, default settings): track() accepted"
            f" {peer.accepted:,} of {plan.outbound_n:,} into its in-memory queue"
            f" ({dropped:,} dropped: the default max_queue_size is 10,000 and a full queue drops);"
            f" all {plan.outbound_n:,} track() calls took {peer.t_tracked - peer.t0:.2f} s,"
            f" flush() returned after {peer.t_flushed - peer.t0:.2f} s;"
            f" the sink got {peer.delivered:,} ({peer.duplicates} duplicates)."
            " Its events/s is delivered events over the time to the last one."
        )
    return out


def ours_detail(run: Run) -> list[str]:
    """How our outbound throughput phase went."""
    plan = run.plan
    out: list[str] = []
    if ours := run.ours_out:
        out.append(
            f"- Ours: {ours.requests} publish requests of {plan.per_request},"
            f" {plan.publish_concurrency} in flight, took {ours.publish_seconds:.2f} s"
            f" ({ours.queued:,} queued, failures {ours.failures or 'none'}, network errors"
            f" retried {ours.retried or 'none'}); one worker;"
            f" the sink had all of them {ours.seconds:.2f} s after the first publish"
            f" ({ours.duplicates} duplicates). CPU: {cpu_text(ours.cpu)}."
        )
    return out


def latency_detail(run: Run) -> list[str]:
    """The latency phase's schedule and its split."""
    plan = run.plan
    out: list[str] = []
    if lat := run.latency:
        out.append(
            f"- Latency phase: {lat.scheduled:,} events scheduled in lists of 10 every 10 ms"
            f" over {plan.latency_seconds} s, at most 32 publish requests in flight;"
            f" {lat.published:,} sent over {lat.send_span:.1f} s"
            f" ({num(lat.rate)} events/s achieved), {lat.skipped:,} skipped because they"
            f" could not be sent within {plan.latency_seconds} s of their time;"
            f" failures {lat.failures or 'none'}. Latency = sink's first receipt - time the"
            f" publish request was sent; max {ms(lat.max_ms)}; {lat.missing} never arrived."
            f" Counted from the scheduled time instead (the backlog included): p50"
            f" {ms(lat.scheduled_p50_ms)} / p99 {ms(lat.scheduled_p99_ms)}."
            f" Split: the publish request itself took p50 {ms(lat.publish_p50_ms)} / p99"
            f" {ms(lat.publish_p99_ms)}; from its 202 to the sink, p50"
            f" {ms(lat.after_ack_p50_ms)} / p99 {ms(lat.after_ack_p99_ms)}."
            f" Network errors retried: {lat.retried or 'none'}."
        )
    return out
