"""The kit's secret check can fail: a layer that shows its URL in a connect error is caught.

The layer here reaches its "broker" over TCP; a port nothing listens on
makes the connect fail as an unreachable broker would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import pytest

from channels_core import (
    BrokerUnavailableError,
    ChannelLayer,
    Inbox,
    redact_url,
    translate_errors,
)
from channels_core.testing import ChannelLayerConformance, free_port

pytestmark = pytest.mark.anyio


class TcpLayer(ChannelLayer):
    """Connects to ``tcp://[user:password@]127.0.0.1:PORT``; nothing else is ever reached."""

    redact = True

    def __init__(self, url: str) -> None:
        self._url = url
        self._port = urlsplit(url).port or 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        if options:
            raise TypeError(f"unknown options: {', '.join(options)}")
        return cls(url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self._url)}>"

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        shown = redact_url(self._url) if self.redact else self._url
        with translate_errors({OSError: BrokerUnavailableError}, what=f"connect to {shown}"):
            stream = await anyio.connect_tcp("127.0.0.1", self._port)
        async with stream:
            yield

    async def publish(self, group: str, payload: bytes) -> None:
        raise NotImplementedError

    async def subscribe(self, group: str) -> None:
        raise NotImplementedError

    async def unsubscribe(self, group: str) -> None:
        raise NotImplementedError


class LeakyTcpLayer(TcpLayer):
    redact = False


def _secret_url() -> str:
    return f"tcp://app:kit-password-1@127.0.0.1:{free_port()}?token=kit-token-2"


async def test_a_layer_that_redacts_passes(caplog: pytest.LogCaptureFixture) -> None:
    kit = ChannelLayerConformance()
    await kit.test_secrets_in_the_url_never_show(
        lambda: TcpLayer("tcp://127.0.0.1:1"), _secret_url(), caplog
    )


async def test_a_password_in_a_connect_error_is_caught(caplog: pytest.LogCaptureFixture) -> None:
    kit = ChannelLayerConformance()
    with pytest.raises(AssertionError, match="a secret from secret_url shows in"):
        await kit.test_secrets_in_the_url_never_show(
            lambda: LeakyTcpLayer("tcp://127.0.0.1:1"), _secret_url(), caplog
        )
