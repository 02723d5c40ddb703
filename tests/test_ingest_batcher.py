"""The group-commit writers, in process against the real database: a failure of ours fails
only the requests it touched, and the writers go on serving the next ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.inbound import group_commit as group_commit_module
from integration.inbound.digests import InstallKey
from integration.inbound.group_commit import GroupCommit, Target, Written
from integration.inbound.service import validate
from integration.spec import Message

if TYPE_CHECKING:
    from tests.conftest import TestEnvironment


def messages(message_id: str) -> list[Message]:
    items: list[Any] = [{"type": "track", "userId": "u", "event": "E", "messageId": message_id}]
    return validate(items).messages


async def test_writers_survive_an_unexpected_error(
    engine: AsyncEngine,
    settings: Settings,
    make_environment: Callable[..., Awaitable[TestEnvironment]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = await make_environment()
    target = Target(env.id, "company_id")
    ingest = GroupCommit(engine, InstallKey.of(settings), writers=1)
    ingest.start()
    try:
        # What runs once the transaction has committed (the ledger's metrics) fails.
        real = group_commit_module.ledger.observe

        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(group_commit_module.ledger, "observe", broken)
        with pytest.raises(RuntimeError):
            await ingest.submit(target, messages("first"))
        monkeypatch.setattr(group_commit_module.ledger, "observe", real)
        assert await ingest.submit(target, messages("second")) == Written(1, 0)
        # The first one was committed before the bug struck: a retry of it is a duplicate.
        assert await ingest.submit(target, messages("first")) == Written(0, 1)
    finally:
        await ingest.stop()
