"""Prometheus metrics. One registry per process; /metrics renders it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

M = TypeVar("M", Counter, Gauge, Histogram)


def children(metric: M) -> Callable[..., M]:
    """`metric.labels`, remembered: the webhook path looks up the same few children thousands of
    times a second, and prometheus_client takes a lock and builds a tuple on every lookup.
    Callers keep label values to a small known set, so the cache stays small."""
    return lru_cache(maxsize=512)(metric.labels)


INBOUND_MESSAGES = Counter(
    "integration_inbound_messages_total",
    "Segment messages received on the webhook, by type and outcome.",
    ["type", "outcome"],
)
INBOUND_LEDGER = Counter(
    "integration_inbound_ledger_total",
    "The webhook's ledger: messages stored, duplicates, quarantined (held whole by the tracking"
    " plan; released: of those, released since), and refusals by reason (refused_bad_key,"
    " install-wide: an unknown key names no environment; refused_bad_signature, refused_invalid,"
    " refused_too_large). A request refused whole counts once.",
    ["outcome"],
)
OUTBOUND_LEDGER = Counter(
    "integration_outbound_ledger_total",
    "The outbox's ledger: rows accepted for Segment, delivered, and dead by Segment's answer"
    " (status: the HTTP status, too_large, or no_answer); quarantined: messages the tracking"
    " plan held whole, never in the outbox (a release later counts them as accepted).",
    ["outcome", "status"],
)
KEY_LOOKUPS = Counter(
    "integration_key_lookups_total",
    "Webhook keys and source write keys looked up, by kind and by where the answer came from"
    " (cache: this process's key cache; database).",
    ["kind", "answered"],
)
KEY_CACHE_LISTENING = Gauge(
    "integration_key_cache_listening",
    "API processes that hear environment changes; only those answer key lookups from their"
    " cache (the others ask the database each time).",
    multiprocess_mode="livesum",
)
# Methods the routes answer; any other a client sends is counted as "other", so that no client
# can add series (a PROPFIND, a made-up verb) to /metrics.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


REQUEST_LATENCY = Histogram(
    "integration_http_request_duration_seconds",
    "HTTP request latency by route and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOUND_PUBLISHED = Counter(
    "integration_outbound_published_total",
    "Product events accepted for Segment, by outcome (queued, stream_off, dead).",
    ["outcome"],
)
MAPPING_FAILED = Counter(
    "integration_mapping_failed_total",
    "Messages an environment's mapping failed on, stored (inbound) or accepted for Segment"
    " (outbound) unmapped with the error attached, by direction.",
    ["direction"],
)
SEGMENT_RESPONSES = Counter(
    "integration_segment_responses_total",
    "Responses from Segment's batch endpoint, by status code ('error' for network errors).",
    ["code"],
)
DELIVERY_LATENCY = Histogram(
    "integration_delivery_latency_seconds",
    "Time from publishing an event to Segment accepting it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
BREAKER_TRANSITIONS = Counter(
    "integration_outbox_breaker_transitions_total",
    "Environments whose delivery paused itself after continuous failure, or resumed (by a"
    " probe or the operator).",
    ["to"],
)
OUTBOX_PAUSED = Gauge(
    "integration_outbox_paused_environments",
    "Environments whose delivery is paused by its breaker now; read at scrape time.",
    multiprocess_mode="mostrecent",
)
OUTBOX_SWEEPS = Counter(
    "integration_outbox_sweeps_total",
    "The worker's sweeps of the outbox for due rows (one a second by default).",
)
EVENTS_EXPIRED = Counter(
    "integration_events_expired_total",
    "Events deleted for being older than their environment's retention, by environment.",
    ["environment"],
)
OLDEST_EVENT = Gauge(
    "integration_events_oldest_timestamp_seconds",
    "Message time of the oldest event an environment with a retention keeps (Unix seconds).",
    ["environment"],
)
OUTBOX_MESSAGES = Gauge(
    "integration_outbox_messages",
    "Outbox rows by status (pending, delivered, dead), all environments; read at scrape time.",
    ["status"],
    multiprocess_mode="mostrecent",  # whichever API process answered the last scrape
)


@contextmanager
def shared_between_processes() -> Iterator[None]:
    """For `serve` with several API processes: each counts only the requests it served, so
    prometheus_client's multiprocess mode keeps every process's values in files of one
    directory, and /metrics sums them, whichever process answers. Set before the processes
    start (they read it when they import prometheus_client); an operator's own directory is
    used as it is."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    path = tempfile.mkdtemp(prefix="integration-metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(path, ignore_errors=True)


def render() -> bytes:
    """The text exposition of this process's metrics, or of all API processes' together."""
    if not os.environ.get(MULTIPROCESS_DIR):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
