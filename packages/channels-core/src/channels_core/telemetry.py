"""Metrics and traces of a channel through the OpenTelemetry API (``channels-core[otel]``).

``instrument(channel)`` turns them on for one channel; nothing is measured
for a channel that is not instrumented, and nothing of OpenTelemetry is
imported until this is called. Counters are read from what the channel and
its layer count anyway (`Channel.stats`, `ChannelLayer.stats`), by
observable instruments whose callbacks run only when a metric reader
collects: no work per message. What costs per message is opt-in:

- ``publish_duration=True``: the histogram of the layer's publish (an SDK's
  ``record`` is a few microseconds);
- ``delivery_latency=True``: the publisher puts its send time in the
  message's envelope (`channels_core.envelope`), the subscriber records
  the publish-to-delivery latency;
- ``traces=True``: a span per publish, current while the message is encoded,
  whose W3C trace context (the propagation API: ``opentelemetry.propagate``)
  goes in the envelope; the subscribing channel, in any process, starts a
  ``deliver`` span per message, child of that publish span (sampled
  traces only: the tracer provider's sampler decides at publish).

An instrumented channel reads enveloped payloads and plain ones alike; a
channel that is not instrumented skips enveloped payloads as undecodable, so
instrument the subscribing processes before any publisher sends envelopes.

Instruments (attribute ``channels.layer``: the layer's URL scheme, e.g.
``redis``; group names only for the groups in ``group_attributes``):

=================================  ===============  ====================================
``channels.messages.published``     counter          messages this channel published
``channels.messages.delivered``     counter          messages the layer delivered to
                                                     this channel (before decoding)
``channels.messages.dropped``       counter          dropped by a full subscriber
                                                     buffer; attribute ``channels.overflow``
                                                     (``drop_oldest``/``drop_newest``)
``channels.messages.undecodable``   counter          payloads that could not be decoded
``channels.gaps``                   counter          gaps, by ``channels.gap.reason``:
                                                     ``reconnect``, ``overflow`` (the layer's
                                                     reports), ``expired`` (``since=``)
``channels.layer.connection_losses`` counter         broker connections lost
``channels.layer.reconnects``       counter          broker connections restored
``channels.subscribers``            up-down counter  live subscriptions
``channels.groups``                 up-down counter  groups subscribed on the broker
``channels.publish.duration``       histogram (s)    the layer's publish, successful ones
                                                     (``publish_duration=True``)
``channels.delivery.latency``       histogram (s)    publisher's send time to delivery
                                                     here (``delivery_latency=True``)
=================================  ===============  ====================================

Spans: ``publish`` (kind PRODUCER) and ``deliver`` (CONSUMER), named
``publish GROUP`` and ``deliver GROUP`` for allowed groups, with the same
attributes as the metrics.

The counters start from zero each time the channel is entered (a
re-entered channel is a fresh connection); exporters see that as a reset.
The application chooses the SDK and exporter (Prometheus, OTLP, ...) and
sets the meter and tracer providers; without them the API does nothing.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import envelope
from ._names import check_name
from .blocking import BlockingChannel
from .channel import Channel
from .exceptions import NotSupportedError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["instrument", "uninstrument"]

#: The meter's and tracer's name (the instrumentation scope).
METER_NAME = "channels_core"

#: The attribute naming a group (only the groups `instrument`'s ``group_attributes`` allows).
GROUP_ATTRIBUTE = "channels.group"

#: Histogram buckets of the publish duration and delivery latency, in seconds: 100 us (in
#: process) to 10 s (a publish retried through an outage). The SDK's default buckets suit ms.
PUBLISH_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

#: ``group_attributes=``: the group names to put in attributes, or a predicate on a name.
GroupAttributes = Iterable[str] | Callable[[str], bool]

#: Attributes and value, one observation of a channel.
_Reading = tuple[dict[str, str], int]
_Reader = Callable[[Channel, dict[str, str]], Iterator[_Reading]]


def instrument(
    channel: Channel | BlockingChannel,
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    publish_duration: bool = False,
    delivery_latency: bool = False,
    traces: bool = False,
    group_attributes: GroupAttributes | None = None,
) -> None:
    """Report `channel`'s metrics (and traces) through OpenTelemetry; calling again re-chooses.

    `meter_provider` and `tracer_provider` default to the global ones
    (``opentelemetry.metrics.set_meter_provider``, ``opentelemetry.trace.
    set_tracer_provider``). `publish_duration`, `delivery_latency` and
    `traces` turn on what costs per message (see the module's docstring).
    `group_attributes` names the groups whose name may become the
    ``channels.group`` attribute of the histograms and spans (a list, or a
    predicate called with each group name); by default none, since the
    number of groups is unbounded. Raises `ImportError` saying what to
    install when ``opentelemetry-api`` is missing. A `BlockingChannel` is
    instrumented through the `Channel` it runs.
    """
    channel = _channel_of(channel)
    instruments = _instruments_for(meter_provider)
    attributes = _attributes_by_group(_layer_attributes(channel), group_attributes)
    tracer = _tracer(tracer_provider) if traces else None
    observer = _Observer(
        channel, instruments, attributes, tracer, publish_duration, delivery_latency
    )
    instruments.channels.add(channel)
    channel._observed_publish = observer.publish if publish_duration or traces else None
    channel._wrap_envelope = observer.wrap if traces or delivery_latency else None
    channel._unwrap_envelope = channel._registry.unwrap = observer.unwrap


def uninstrument(channel: Channel | BlockingChannel) -> None:
    """Stop reporting `channel`'s metrics and traces; it no longer reads enveloped payloads."""
    channel = _channel_of(channel)
    channel._observed_publish = channel._wrap_envelope = None
    channel._unwrap_envelope = channel._registry.unwrap = None
    for instruments in [*_global, *_by_provider.values()]:
        instruments.channels.discard(channel)


class _Observer:
    """What one instrumented channel does per message: spans, envelope fields, histograms."""

    def __init__(
        self,
        channel: Channel,
        instruments: _Instruments,
        attributes: Callable[[str], dict[str, str]],
        tracer: Tracer | None,
        publish_duration: bool,
        delivery_latency: bool,
    ) -> None:
        self._encode = channel._encode
        self._channel = channel
        self._attributes = attributes
        self._tracer = tracer
        self._record_duration = instruments.publish_duration.record if publish_duration else None
        self._record_latency = instruments.delivery_latency.record if delivery_latency else None
        if tracer is not None:
            from opentelemetry import propagate, trace

            self._inject = propagate.inject
            self._extract = propagate.extract
            self._span_of = trace.get_current_span
            self._producer, self._consumer = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER

    async def publish(self, group: str, message: Any) -> None:
        """Encode and publish in a ``publish`` span (traces on), timing the layer's publish."""
        attributes = self._attributes(group)
        if self._tracer is None:
            await self._timed_publish(group, self._encode(group, message), attributes)
            return
        name = (
            f"publish {attributes[GROUP_ATTRIBUTE]}" if GROUP_ATTRIBUTE in attributes else "publish"
        )
        with self._tracer.start_as_current_span(name, kind=self._producer, attributes=attributes):
            await self._timed_publish(group, self._encode(group, message), attributes)

    async def _timed_publish(self, group: str, payload: bytes, attributes: dict[str, str]) -> None:
        record = self._record_duration
        if record is None:
            await self._channel._send(group, payload)
            return
        started = time.perf_counter()
        await self._channel._send(group, payload)
        record(time.perf_counter() - started, attributes)

    def wrap(self, group: str, payload: bytes) -> bytes:
        """`payload` in an envelope with the current trace context and the send time."""
        fields: dict[str, str] = {}
        if self._tracer is not None and self._span_of().get_span_context().trace_flags.sampled:
            self._inject(fields)  # a trace not sampled has no span to join: no context sent
        if self._record_latency is not None:
            fields[envelope.SENT_FIELD] = str(time.time_ns())
        return envelope.wrap(fields, payload)

    def unwrap(self, group: str, enveloped: bytes, live: bool) -> bytes:
        """The payload of `enveloped`; for a live delivery, its latency and ``deliver`` span."""
        fields, payload = envelope.unwrap(enveloped)
        if not live:
            return payload
        sent = fields.get(envelope.SENT_FIELD)
        if self._record_latency is not None and sent is not None:
            latency = (time.time_ns() - int(sent)) / 1e9
            self._record_latency(max(0.0, latency), self._attributes(group))
        if self._tracer is not None:
            context = self._extract(fields)
            if self._span_of(context).get_span_context().trace_flags.sampled:
                attributes = self._attributes(group)
                name = (
                    f"deliver {attributes[GROUP_ATTRIBUTE]}"
                    if GROUP_ATTRIBUTE in attributes
                    else "deliver"
                )
                self._tracer.start_span(
                    name, context, kind=self._consumer, attributes=attributes
                ).end()
        return payload


def _channel_of(channel: Channel | BlockingChannel) -> Channel:
    """The `Channel` that does the work (a `BlockingChannel` runs one)."""
    if isinstance(channel, BlockingChannel):
        return channel._channel
    if not isinstance(channel, Channel):
        raise TypeError(
            f"instrument needs a Channel or BlockingChannel, got {type(channel).__name__}"
        )
    return channel


def _attributes_by_group(
    base: dict[str, str], allowed: GroupAttributes | None
) -> Callable[[str], dict[str, str]]:
    """A group's attributes: `base`, with ``channels.group`` for the groups `allowed`."""
    if allowed is None:
        return lambda group: base
    if callable(allowed):
        allows = allowed

        def attributes(group: str) -> dict[str, str]:
            return {**base, GROUP_ATTRIBUTE: group} if allows(group) else base

        return attributes
    if isinstance(allowed, str | bytes) or not isinstance(allowed, Iterable):
        raise TypeError(
            "group_attributes must be a list of group names or a predicate on a group name, "
            f"got {type(allowed).__name__}; wrap a single name in a list"
        )
    table = {
        name: {**base, GROUP_ATTRIBUTE: name}
        for name in (check_name(group, "group_attributes item") for group in allowed)
    }
    return lambda group: table.get(group, base)


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
        self.delivery_latency = meter.create_histogram(
            "channels.delivery.latency",
            unit="s",
            description="From the publisher's send time (its clock) to delivery here (this clock)",
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
    for reason, count in channel._registry.gaps_by_reason.items():
        yield {**attributes, "channels.gap.reason": reason}, count


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
    ("channels.gaps", "Gaps (messages possibly missed), by reason", _gaps),
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


def _tracer(tracer_provider: TracerProvider | None) -> Tracer:
    from opentelemetry import trace

    from . import __version__

    provider = trace.get_tracer_provider() if tracer_provider is None else tracer_provider
    return provider.get_tracer(METER_NAME, __version__)
