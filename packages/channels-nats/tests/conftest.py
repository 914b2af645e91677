"""NATS servers for the tests.

`nats_url` is the shared server (the root conftest.py: configured, else
loopback, else outside CI a throwaway one). `nats_server` is a private
server per test, on another free loopback port, that the test may stop
and restart. Tests keep apart on the shared server through a `namespace`
of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

import channels_core.testing
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsCluster, NatsServer, ToolMissing, delete_history

LayerMaker = Callable[..., NatsChannelLayer]


@contextmanager
def tools_required() -> Iterator[None]:
    """A missing ``nats-server``: a skip, or a failure in CI."""
    try:
        yield
    except ToolMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A private server for this test (it may stop, restart or kill it)."""
    with tools_required():
        server = NatsServer()
    with server:
        yield server


@pytest.fixture
def js_server() -> Iterator[NatsServer]:
    """A private server with a JetStream store of its own (it may lose it: `wipe_store`)."""
    with tools_required():
        server = NatsServer(jetstream=True)
    with server:
        yield server


@pytest.fixture
def nats_server_slow() -> Iterator[NatsServer]:
    """A private JetStream server that closes a client it holds 256 KiB for (a slow consumer)."""
    with tools_required():
        server = NatsServer(
            config='max_pending: 262144\nmax_payload: 65536\nwrite_deadline: "1s"\n', jetstream=True
        )
    with server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three routed private servers (a test may kill any of them)."""
    with tools_required():
        cluster = NatsCluster(3)
    with cluster:
        yield cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def namespace(nats_url: str) -> Iterator[str]:
    """A namespace of this test's own: no cross-talk on a shared server.

    Its history stream, if a test made one, is deleted afterwards.
    """
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_history(nats_url, name)


@pytest.fixture
def make_nats_layer(nats_url: str, namespace: str) -> LayerMaker:
    """Builds layers on the shared server in this test's namespace (options pass through)."""

    def make(url: str = nats_url, **options: object) -> NatsChannelLayer:
        return NatsChannelLayer.from_url(url, **{"namespace": namespace, **options})

    return make


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """`channels_core.testing.eventually`, for the tests that take it as a fixture."""
    return channels_core.testing.eventually
