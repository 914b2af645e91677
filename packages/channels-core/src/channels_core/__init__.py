"""channels-core: anyio publish/subscribe with pluggable broker layers.

async with Channel.from_url("memory://") as channel:
    async with channel.subscribe("chatroom") as subscriber:
        await channel.publish("chatroom", {"message": "hi"})
        event = await subscriber.receive()
"""

from .blocking import BlockingChannel, BlockingSubscriber
from .channel import Channel, ChannelStats
from .discovery import available_layers, get_layer
from .event import Event
from .exceptions import (
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelInUseError,
    ChannelsError,
    LayerImportError,
    LayerNotFoundError,
    LossReason,
    MessagesLost,
    NotSupportedError,
    PayloadTooLargeError,
    SerializationError,
)
from .layer import ChannelLayer, Inbox
from .plugins import layer_capabilities
from .serializers import Serializer
from .subscriber import OverflowPolicy, Subscriber

__all__ = [
    "BlockingChannel",
    "BlockingSubscriber",
    "BrokerUnavailableError",
    "Channel",
    "ChannelClosedError",
    "ChannelInUseError",
    "ChannelLayer",
    "ChannelStats",
    "ChannelsError",
    "Event",
    "Inbox",
    "LayerImportError",
    "LayerNotFoundError",
    "LossReason",
    "MessagesLost",
    "NotSupportedError",
    "OverflowPolicy",
    "PayloadTooLargeError",
    "SerializationError",
    "Serializer",
    "Subscriber",
    "available_layers",
    "get_layer",
    "layer_capabilities",
]

__version__ = "0.1.0"
