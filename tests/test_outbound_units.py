"""The two pure decisions of delivery: how long to wait before a retry, how to split a batch."""

from __future__ import annotations

from integration.config import Settings
from integration.outbound.delivery import retry_delay
from integration.outbound.segment import BATCH_BUDGET, MAX_BATCH_EVENTS, pack

SETTINGS = Settings(outbox_backoff_base_seconds=1.0, outbox_backoff_cap_seconds=600.0)


def test_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    for attempts, full in [(0, 1.0), (1, 2.0), (3, 8.0), (20, 600.0), (200, 600.0)]:
        delays = [retry_delay(SETTINGS, attempts, None) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 10, "jitter spreads retries out"


def test_retry_after_is_a_floor() -> None:
    assert all(retry_delay(SETTINGS, 0, 30.0) == 30.0 for _ in range(50))
    assert all(retry_delay(SETTINGS, 12, 1.0) >= 300 for _ in range(50))


def test_retry_after_is_clamped_to_the_cap() -> None:
    # A remote host's inf, 1e30 or a date in the year 9999 must stay a delay Postgres records.
    for asked in (1e30, float("inf"), 10**9):
        assert all(retry_delay(SETTINGS, 0, asked) == 600.0 for _ in range(20))
    assert all(0.5 <= retry_delay(SETTINGS, 0, float("nan")) <= 1.0 for _ in range(20))


def test_pack_keeps_order_and_every_request_under_the_budget() -> None:
    sizes = [30_000] * 40 + [100] * 1000 + [32_000]
    runs = pack(sizes)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    for run in runs:
        assert sum(sizes[i] + 1 for i in run) <= BATCH_BUDGET
    assert [len(run) for run in runs] == [17, 17, 1007]  # full requests, then the rest


def test_pack_of_nothing_is_no_request() -> None:
    assert pack([]) == []


def test_pack_caps_a_batch_at_2500_events_however_small() -> None:
    """Segment answers 200 to a bigger batch and drops it: 500 KB would allow about 5,000
    of these."""
    sizes = [100] * 6001
    assert sum(s + 1 for s in sizes[: MAX_BATCH_EVENTS + 1]) < BATCH_BUDGET
    runs = pack(sizes)
    assert [len(run) for run in runs] == [2500, 2500, 1001]
    assert [i for run in runs for i in run] == list(range(len(sizes)))
