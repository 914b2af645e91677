"""Metrics of a channel through the OpenTelemetry metrics API (``channels-core[otel]``).

``instrument(channel)`` turns them on for one channel; nothing is measured
for a channel that is not instrumented, and nothing of OpenTelemetry is
imported until this is called. Counters are read from what the channel and
its layer count anyway (`Channel.stats`, `ChannelLayer.stats`), by
observable instruments whose callbacks run only when a metric reader
collects: no work per message. The publish duration histogram is the one
instrument that costs per message (an SDK's ``record`` is a few
microseconds: +74% CPU per 1 KiB message on ``memory://``, see the README),
so it is opt-in: ``instrument(channel, publish_duration=True)``.

Instruments (attribute ``channels.layer``: the layer's URL scheme, e.g.
``redis``; group names are never attributes, their number is unbounded):

=================================  ===============  ====================================
``channels.messages.published``     counter          messages this channel published
``channels.messages.delivered``     counter          messages the layer delivered to
                                                     this channel (before decoding)
``channels.messages.dropped``       counter          dropped by a full subscriber
                                                     buffer; attribute ``channels.overflow``
                                                     (``drop_oldest``/``drop_newest``)
``channels.messages.undecodable``   counter          payloads that could not be decoded
``channels.gaps``                   counter          gaps told to subscribers; attribute
                                                     ``channels.gap.reason`` (``reconnect``)
``channels.layer.connection_losses`` counter         broker connections lost
``channels.layer.reconnects``       counter          broker connections restored
``channels.subscribers``            up-down counter  live subscriptions
``channels.groups``                 up-down counter  groups subscribed on the broker
``channels.publish.duration``       histogram (s)    the layer's publish, successful ones
                                                     (with ``publish_duration=True``)
=================================  ===============  ====================================

The counters start from zero each time the channel is entered (a
re-entered channel is a fresh connection); exporters see that as a reset.
The application chooses the SDK and exporter (Prometheus, OTLP, ...) and
sets the meter provider; without one the API's instruments do nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .channel import Channel
from .exceptions import NotSupportedError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = ["instrument", "uninstrument"]

#: The meter's name (the instrumentation scope).
METER_NAME = "channels_core"

#: Histogram buckets of the publish duration, in seconds: 100 us (in process) to 10 s
#: (a publish retried through an outage). The SDK's default buckets suit milliseconds.
PUBLISH_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

#: Attributes and value, one observation of a channel.
_Reading = tuple[dict[str, str], int]
_Reader = Callable[[Channel, dict[str, str]], Iterator[_Reading]]


def instrument(
    channel: Channel,
    *,
    meter_provider: MeterProvider | None = None,
    publish_duration: bool = False,
) -> None:
    """Report `channel`'s metrics through OpenTelemetry (calling it again updates the choice).

    `meter_provider` defaults to the global one (``opentelemetry.metrics.
    set_meter_provider``). `publish_duration` adds the histogram of publish
    durations, the one metric with a cost per message. Raises `ImportError`
    saying what to install when ``opentelemetry-api`` is missing.
    """
    instruments = _instruments_for(meter_provider)
    instruments.channels.add(channel)
    channel._record_publish_duration = None
    if publish_duration:
        record = instruments.publish_duration.record
        attributes = _layer_attributes(channel)

        def record_publish_duration(seconds: float) -> None:
            record(seconds, attributes)

        channel._record_publish_duration = record_publish_duration


def uninstrument(channel: Channel) -> None:
    """Stop reporting `channel`'s metrics (its counters no longer appear at collection)."""
    channel._record_publish_duration = None
    for instruments in [*_global, *_by_provider.values()]:
        instruments.channels.discard(channel)


class _Instruments:
    """The instruments on one meter provider; their callbacks read every channel instrumented."""

    def __init__(self, meter: Meter) -> None:
        self.channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self.publish_duration = meter.create_histogram(
            "channels.publish.duration",
            unit="s",
            description="Duration of the layer's publish (successful ones)",
            explicit_bucket_boundaries_advisory=PUBLISH_DURATION_BUCKETS,
        )
        for name, description, read in _COUNTERS:
            meter.create_observable_counter(
                name, [self._observer(read)], unit="{message}", description=description
            )
        for name, description, read in _UP_DOWN_COUNTERS:
            meter.create_observable_up_down_counter(
                name, [self._observer(read)], unit="1", description=description
            )

    def _observer(self, read: _Reader) -> Callable[[CallbackOptions], Iterable[Observation]]:
        from opentelemetry.metrics import Observation

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            totals: dict[tuple[tuple[str, str], ...], int] = {}
            for channel in list(self.channels):
                for attributes, value in _read_safely(read, channel):
                    key = tuple(sorted(attributes.items()))
                    totals[key] = totals.get(key, 0) + value
            return [Observation(value, dict(key)) for key, value in totals.items()]

        return observe


def _read_safely(read: _Reader, channel: Channel) -> list[_Reading]:
    """`read(channel)`, retried if the event loop changed the channel's tables meanwhile.

    Readers collect in their own thread (a Prometheus scrape, a periodic
    exporter) while the channel's loop adds and removes subscribers.
    """
    attributes = _layer_attributes(channel)
    for _ in range(3):
        try:
            return list(read(channel, attributes))
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return []


def _published(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield attributes, channel.stats().published


def _delivered(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield attributes, channel.stats().received


def _undecodable(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield attributes, channel.stats().undecodable


def _dropped(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    registry = channel._registry
    totals = dict(registry.dropped_by_left)
    for subscriber in registry.subscribers:
        if subscriber.dropped:
            policy = "drop_oldest" if subscriber._drop_oldest else "drop_newest"
            totals[policy] += subscriber.dropped
    for policy, count in totals.items():
        yield {**attributes, "channels.overflow": policy}, count


def _gaps(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield {**attributes, "channels.gap.reason": "reconnect"}, channel.stats().gaps


def _layer_counter(field: str) -> _Reader:
    def read(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
        try:
            stats = channel.layer.stats()
        except NotSupportedError:
            return
        yield attributes, getattr(stats, field)

    return read


def _subscribers(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield attributes, channel.stats().subscribers


def _groups(channel: Channel, attributes: dict[str, str]) -> Iterator[_Reading]:
    yield attributes, channel.stats().groups


_COUNTERS: tuple[tuple[str, str, _Reader], ...] = (
    ("channels.messages.published", "Messages this channel published", _published),
    (
        "channels.messages.delivered",
        "Messages the layer delivered to this channel, before decoding",
        _delivered,
    ),
    (
        "channels.messages.dropped",
        "Messages dropped by a full subscriber buffer, by overflow policy",
        _dropped,
    ),
    ("channels.messages.undecodable", "Payloads that could not be decoded", _undecodable),
    ("channels.gaps", "Gaps (possibly missed messages) told to subscribers, by reason", _gaps),
    (
        "channels.layer.connection_losses",
        "Broker connections lost",
        _layer_counter("connection_losses"),
    ),
    ("channels.layer.reconnects", "Broker connections restored", _layer_counter("reconnects")),
)

_UP_DOWN_COUNTERS: tuple[tuple[str, str, _Reader], ...] = (
    ("channels.subscribers", "Live subscriptions", _subscribers),
    ("channels.groups", "Groups subscribed on the broker", _groups),
)


def _layer_attributes(channel: Channel) -> dict[str, str]:
    layer_class = type(channel.layer)
    name = layer_class.url_schemes[0] if layer_class.url_schemes else layer_class.__name__
    return {"channels.layer": name}


#: One set of instruments per meter provider given to `instrument`.
_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
#: The instruments on the global meter provider, once made.
_global: list[_Instruments] = []


def _instruments_for(meter_provider: MeterProvider | None) -> _Instruments:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "channels_core.telemetry needs the OpenTelemetry API: pip install 'channels-core[otel]'"
        ) from exc
    from . import __version__

    if meter_provider is None:
        if not _global:
            _global.append(_Instruments(metrics.get_meter(METER_NAME, __version__)))
        return _global[0]
    instruments = _by_provider.get(meter_provider)
    if instruments is None:
        meter = meter_provider.get_meter(METER_NAME, __version__)
        instruments = _by_provider[meter_provider] = _Instruments(meter)
    return instruments
