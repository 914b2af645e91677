"""Two OS processes exchanging messages through PostgreSQL."""

from __future__ import annotations

import pytest

from channels_core.testing.peer import exchange_with_peer

pytestmark = pytest.mark.anyio


async def test_two_processes_exchange_messages(postgres_url: str, namespace: str) -> None:
    messages: list[object] = [*range(30), {"nested": ["ünï", None]}, "L" * 30_000]
    await exchange_with_peer(postgres_url, namespace, messages, pattern="pi*")
