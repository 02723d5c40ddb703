"""The group-commit writers, in process against the real database: a failure of ours fails
only the requests it touched, and the writers go on serving the next ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.crypto import SecretBox
from integration.inbound import batcher as batcher_module
from integration.inbound import service
from integration.inbound.batcher import IngestBatcher, Parsed

if TYPE_CHECKING:
    from tests.conftest import TestEnvironment


def parsed(message_id: str) -> Parsed:
    items: list[Any] = [{"type": "track", "userId": "u", "event": "E", "messageId": message_id}]
    return Parsed(items, service.validate(items))


async def test_writers_survive_an_unexpected_error(
    engine: AsyncEngine,
    settings: Settings,
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = await make_environment()
    ingest = IngestBatcher(engine, SecretBox(settings.secret_key or ""), writers=1)
    ingest.start()
    try:
        real = batcher_module._answers

        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(batcher_module, "_answers", broken)
        with pytest.raises(RuntimeError):
            await ingest.submit(env.key, b"{}", None, parsed("first"))
        monkeypatch.setattr(batcher_module, "_answers", real)
        assert await ingest.submit(env.key, b"{}", None, parsed("second")) == (1, 0)
        # The first one was committed before the bug struck: a retry of it is a duplicate.
        assert await ingest.submit(env.key, b"{}", None, parsed("first")) == (0, 1)
    finally:
        await ingest.stop()
