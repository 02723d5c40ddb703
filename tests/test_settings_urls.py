"""Which URLs the settings give: the bind address unless PUBLIC_BASE_URL says otherwise."""

from __future__ import annotations

import pytest

from integration.config import Settings


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_webhook_urls_follow_the_port_when_no_public_url_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "8001")
    settings = Settings(_env_file=None)
    assert settings.local_base_url == "http://127.0.0.1:8001"
    assert settings.webhook_url("k") == "http://127.0.0.1:8001/webhooks/segment/k"
    everywhere = Settings(_env_file=None, host="0.0.0.0", port=9000)
    assert everywhere.public_base_url == "http://127.0.0.1:9000"  # a URL a browser can open
    assert Settings(_env_file=None, host="::1").local_base_url == "http://[::1]:8001"


def test_an_explicit_public_url_is_used_for_webhooks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8001")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://hooks.example.test/")
    settings = Settings(_env_file=None)
    assert settings.webhook_url("k") == "https://hooks.example.test/webhooks/segment/k"
    assert settings.local_base_url == "http://127.0.0.1:8001"
