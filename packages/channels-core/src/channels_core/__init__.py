"""channels-core: anyio publish/subscribe with pluggable broker layers.

async with Channel.from_url("memory://") as channel:
    async with channel.subscribe("chatroom") as subscriber:
        await channel.publish("chatroom", {"message": "hi"})
        event = await subscriber.receive()

Layer authors find what they need here too (`ChannelLayer`, `LayerStats`,
`LayerOptions` with `channels_core.options`, `redact_url`,
`translate_errors`, the retry policies and `background_tasks`), and the
conformance kit and test-server helpers in `channels_core.testing`.
"""

from . import options
from .background import background_tasks
from .blocking import BlockingChannel, BlockingSubscriber
from .boundary import ErrorMapping, translate_errors
from .channel import Channel, ChannelStats
from .discovery import available_layers, get_layer
from .encryption import encrypted
from .event import Event
from .exceptions import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelInUseError,
    ChannelsError,
    LayerImportError,
    LayerInUseError,
    LayerNotFoundError,
    LossReason,
    MessagesLost,
    NotSupportedError,
    PayloadTooLargeError,
    SerializationError,
)
from .health import ChannelHealth
from .layer import ChannelLayer, Inbox
from .options import LayerOptions
from .plugins import layer_capabilities
from .reconnect import Backoff, call_with_deadline, reconnect_forever, retry_until
from .serializers import Serializer
from .stats import LayerStats
from .subscriber import OverflowPolicy, Subscriber
from .urls import redact_url, url_secrets

__all__ = [
    "Backoff",
    "BlockingChannel",
    "BlockingSubscriber",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "Channel",
    "ChannelClosedError",
    "ChannelHealth",
    "ChannelInUseError",
    "ChannelLayer",
    "ChannelStats",
    "ChannelsError",
    "ErrorMapping",
    "Event",
    "Inbox",
    "LayerImportError",
    "LayerInUseError",
    "LayerNotFoundError",
    "LayerOptions",
    "LayerStats",
    "LossReason",
    "MessagesLost",
    "NotSupportedError",
    "OverflowPolicy",
    "PayloadTooLargeError",
    "SerializationError",
    "Serializer",
    "Subscriber",
    "available_layers",
    "background_tasks",
    "call_with_deadline",
    "encrypted",
    "get_layer",
    "layer_capabilities",
    "options",
    "reconnect_forever",
    "redact_url",
    "retry_until",
    "translate_errors",
    "url_secrets",
]

__version__ = "0.1.0"
