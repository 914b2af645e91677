"""`translate_errors`: driver exceptions become ChannelsError subclasses, chained, secret-free."""

from __future__ import annotations

import socket

import anyio
import pytest

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ChannelsError,
    ErrorMapping,
    SerializationError,
    translate_errors,
)
from channels_core.testing import free_port

MAPPING: ErrorMapping = {
    OSError: ChannelsError,
    ConnectionError: BrokerUnavailableError,
    PermissionError: BrokerRefusedError,
}


def test_a_refused_connection_becomes_broker_unavailable() -> None:
    port = free_port()
    with pytest.raises(BrokerUnavailableError) as caught:
        with translate_errors(MAPPING, what=f"connect to tcp://127.0.0.1:{port}"):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert str(caught.value).startswith(f"could not connect to tcp://127.0.0.1:{port}: ")
    assert isinstance(caught.value, ChannelsError)


def test_the_most_specific_mapped_class_wins() -> None:
    with pytest.raises(BrokerRefusedError, match="PermissionError: NOPERM"):
        with translate_errors(MAPPING, what="publish"):
            raise PermissionError("NOPERM this user has no permissions")
    with pytest.raises(ChannelsError) as caught:
        with translate_errors(MAPPING, what="publish"):
            raise IsADirectoryError("odd")
    assert type(caught.value) is ChannelsError


def test_secrets_in_the_driver_message_are_masked() -> None:
    with pytest.raises(BrokerRefusedError) as caught:
        with translate_errors(MAPPING, what="connect", secrets=["hunter2", ""]):
            raise PermissionError("password hunter2 rejected for user app")
    assert "hunter2" not in str(caught.value)
    assert "password *** rejected" in str(caught.value)


def test_channels_errors_and_unmapped_errors_pass_unchanged() -> None:
    original = SerializationError("mine")
    with pytest.raises(SerializationError) as caught:
        with translate_errors(MAPPING, what="publish"):
            raise original
    assert caught.value is original
    with pytest.raises(KeyError):
        with translate_errors(MAPPING, what="publish"):
            raise KeyError("not a driver error")


@pytest.mark.anyio
async def test_cancellation_passes_through() -> None:
    with anyio.CancelScope() as scope:
        with translate_errors({BaseException: ChannelsError}, what="wait"):
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
