"""`retry_until`: what a user reads when a broker stays unreachable."""

from __future__ import annotations

import pytest

from channels_core import BrokerUnavailableError
from channels_core.reconnect import Backoff, retry_until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("error", "reads"),
    [
        (ConnectionError("Connect call failed ('127.0.0.1', 1)."), "('127.0.0.1', 1). Check"),
        (TimeoutError(), "within 0.05 s: TimeoutError. Check"),
    ],
    ids=["own-period", "no-message"],
)
async def test_the_outage_error_reads_as_one_sentence(error: Exception, reads: str) -> None:
    async def attempt() -> None:
        raise error

    with pytest.raises(BrokerUnavailableError) as raised:
        await retry_until(
            attempt,
            timeout=0.05,
            retry_on=(OSError,),
            what="connect to redis://127.0.0.1:1/0",
            backoff=Backoff(initial=0.01, maximum=0.01),
        )
    message = str(raised.value)
    assert reads in message
    assert ".." not in message
    assert raised.value.__cause__ is error
