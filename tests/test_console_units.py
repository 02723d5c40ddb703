"""The console's pieces without a server: the session signer, the live log's bounds, the
chart, and how a settings form becomes the REST API's changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from integration.console import chart
from integration.console.environments import duration, settings_changes
from integration.console.session import LIFETIME_SECONDS, Signer
from integration.inbound import live

KEY = "k" * 40
TOKEN = "t" * 40


def test_a_session_reads_back_until_it_expires() -> None:
    signer = Signer(KEY, TOKEN)
    cookie, session = signer.issue(signed_in=True, now=1_000)
    assert signer.read(cookie, now=1_001) == session
    assert signer.read(cookie, now=1_000 + LIFETIME_SECONDS) is None
    assert Signer(KEY + "x", TOKEN).read(cookie, now=1_001) is None
    assert Signer(KEY, TOKEN + "x").read(cookie, now=1_001) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    signer = Signer(KEY, TOKEN)
    _, one = signer.issue(signed_in=True)
    _, two = signer.issue(signed_in=True)
    assert signer.csrf_valid(one, signer.csrf_token(one))
    assert not signer.csrf_valid(one, signer.csrf_token(two))
    assert not signer.csrf_valid(one, None) and not signer.csrf_valid(one, "")


def test_the_live_log_is_bounded_per_environment_and_in_environments() -> None:
    log = live.LiveLog(limit=3, max_environments=2)
    envs = [uuid.uuid4() for _ in range(3)]
    for i in range(5):
        log.add(envs[0], [live.seen({"type": "track", "event": f"e{i}"}, live.REJECTED, "r")])
    assert [s.name for s in log.recent(envs[0])] == ["e4", "e3", "e2"]
    log.add(envs[1], [live.seen({}, live.REJECTED, "r")])
    log.add(envs[2], [live.seen({}, live.REJECTED, "r")])
    assert log.recent(envs[0]) == [] and len(log.recent(envs[2])) == 1


def test_a_large_refused_message_is_not_kept_whole() -> None:
    big = {"type": "track", "userId": "u", "properties": {"blob": "x" * live.MAX_KEPT_BYTES}}
    entry = live.seen(big, live.REJECTED, "too big")
    assert entry.raw is None and entry.user_id == "u" and entry.type == "track"
    company = live.seen({"properties": {"acct": 7}}, live.REJECTED, "r", company_property="acct")
    assert company.company == "7"


def test_the_chart_scales_to_a_round_top_and_draws_both_series() -> None:
    assert [chart._nice(n) for n in (1, 3, 7, 20, 21, 480, 5001)] == [1, 5, 10, 20, 50, 500, 10000]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    counts = chart.series({start: 4}, start)
    assert len(counts) == chart.MINUTES and counts[0] == 4 and sum(counts) == 4
    svg = str(chart.svg(counts, [0] * chart.MINUTES, start))
    assert svg.count("<polyline") == 2 and ">now</text>" in svg and "<script" not in svg


def test_each_settings_form_names_the_changes_the_rest_api_takes() -> None:
    assert settings_changes({"what": "stream", "stream": "on"}) == {"stream_enabled": True}
    assert settings_changes({"what": "segment", "write_key": "", "region": "eu"}) == {
        "segment_api_url": "eu"
    }
    assert settings_changes(
        {"what": "segment", "write_key": "wk", "region": "custom", "custom_url": "http://h"}
    ) == {"segment_write_key": "wk", "segment_api_url": "http://h"}
    assert settings_changes({"what": "segment", "clear_write_key": "1", "region": "us"}) == {
        "segment_write_key": "",
        "segment_api_url": "us",
    }
    assert settings_changes({"what": "signing", "action": "clear"}) == {
        "webhook_signing_secret": ""
    }
    assert settings_changes({"what": "company", "company_property": " acct "}) == {
        "company_property": "acct"
    }


def test_grace_periods_read_as_words() -> None:
    assert [duration(s) for s in (86400, 3600, 604800, 90, 7200)] == [
        "1 day",
        "1 hour",
        "1 week",
        "90 s",
        "2 hours",
    ]
