"""The core's conformance suite against a real PostgreSQL (asyncio only)."""

from __future__ import annotations

import pytest

from channels_core.testing import (
    BadOptions,
    ChannelLayerConformance,
    HistoryLayerFactory,
    LayerFactory,
    free_port,
)
from channels_layer_postgres.testing import LayerMaker


class TestPostgreSQLConformance(ChannelLayerConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def make_layer(self, make_layer: LayerMaker) -> LayerFactory:
        return make_layer

    @pytest.fixture
    def make_history_layer(self, make_layer: LayerMaker) -> HistoryLayerFactory:
        """Layers of the session's namespace (its tables are dropped at the end)."""
        return make_layer

    @pytest.fixture
    def layer_url(self, postgres_url: str) -> str:
        return postgres_url

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"namespace": "Bad Name"}, ValueError),
            ({"namespace": ""}, ValueError),
            ({"namespace": 1}, TypeError),
            ({"publish_timeout": "5"}, TypeError),
            ({"publish_timeout": -1}, ValueError),
            ({"connect_timeout": 0}, ValueError),
            ({"health_check_interval": float("nan")}, ValueError),
            ({"pool_size": 0}, ValueError),
            ({"max_backlog": 1.5}, TypeError),
            ({"reconnect_backoff": 1.0}, TypeError),
            ({"ssl": 1}, TypeError),
            ({"history_size": -1}, ValueError),
            ({"history_size": "10"}, TypeError),
            ({"history_ttl": 0}, ValueError),
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        # Nothing listens on that port: connecting fails, and its error must not show the secrets.
        return (
            f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db"
            "?sslpassword=t0psecret&connect_timeout=0.5"
        )


#: Kit checks comparing a received `Event` with one built without a position.
WHOLE_EVENT_CHECKS = frozenset(
    {
        "test_subscriber_receives_what_is_published",
        "test_pattern_and_group_subscribers_both_receive",
    }
)


class TestPostgreSQLConformanceWithHistory(TestPostgreSQLConformance):
    """Every check with history on: publishing (single, batched, coalesced) logs each message."""

    @pytest.fixture
    def make_layer(self, make_layer: LayerMaker) -> LayerMaker:
        """The package's layers, with history on unless the test sets other history options."""
        return lambda url=None, **options: make_layer(url, **{"history_size": 1000, **options})

    @pytest.fixture(autouse=True)
    def _events_carry_positions(self, request: pytest.FixtureRequest) -> None:
        if request.node.originalname in WHOLE_EVENT_CHECKS:
            pytest.skip("compares whole events, whose position is None only with history off")
