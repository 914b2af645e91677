"""A conformance suite for channel layers, to run in a layer's own tests.

Subclass `ChannelLayerConformance` in a test module and override the
``make_layer`` fixture with a callable that builds a new, unconnected layer;
every layer it builds must reach the same broker (so that two channels can
talk). Layers that only run on asyncio also override ``anyio_backend``::

    import pytest
    from channels_core.testing import ChannelLayerConformance

    class TestMyLayerConformance(ChannelLayerConformance):
        @pytest.fixture
        def anyio_backend(self):
            return "asyncio"

        @pytest.fixture
        def make_layer(self):
            return lambda: MyLayer.from_url("my://127.0.0.1")

The shared shape is checked too: ``stats()`` is a frozen `LayerStats`
with the shared fields (layers whose ``stats()`` predates it are skipped
for now); with a ``layer_url`` fixture, the ``bad_options`` fixture's
options raise `TypeError`/`ValueError` naming the option; with a
``secret_url`` fixture, no secret of that URL shows in ``repr``, stats,
errors of a failed connect or log records.

Needs pytest and anyio's pytest plugin (installed with anyio); trio for the
default backends. Pattern tests adapt to the layer: with pattern support
they check matching, without it they check `NotSupportedError`.

History tests run for layers declaring the "history" capability, with
layers from the ``make_history_layer`` fixture (by default
``from_url(layer_url, history_size=..., history_ttl=...)``); the others
check that ``since=``, ``history()`` and ``history_size`` are refused.

`ThrowawayServer` is the shape of a private broker for a layer's fault
tests (`url`, `start`, `stop`, `restart`, a context manager), with
`free_port`, `wait_for_port` and `require_tool` to build one.

`handed_on` waits until a layer's `channels_core.hand_on.HandOn` has handed
on what it held; `eventually` polls until a condition holds (a counter, a
server's state: what offers no event to wait on).

`channels_core.testing.peer.exchange_with_peer` checks that messages
cross OS processes through the layer (an echo peer in a subprocess).
"""

from ._hand_on import handed_on
from ._polling import eventually
from ._proxy import TcpProxy
from ._servers import (
    LOOPBACK,
    ThrowawayServer,
    ToolMissing,
    free_port,
    require_tool,
    wait_for_port,
)
from ._suite import (
    DELIVERY_TIMEOUT,
    BadOptions,
    ChannelLayerConformance,
    HistoryLayerFactory,
    LayerFactory,
)

__all__ = [
    "DELIVERY_TIMEOUT",
    "LOOPBACK",
    "BadOptions",
    "ChannelLayerConformance",
    "HistoryLayerFactory",
    "LayerFactory",
    "TcpProxy",
    "ThrowawayServer",
    "ToolMissing",
    "eventually",
    "free_port",
    "handed_on",
    "require_tool",
    "wait_for_port",
]
