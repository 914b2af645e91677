"""nats-py's client, handing each message of a routed subscription straight to its handler.

nats-py gives every subscription its own queue and task, so messages of
two subscriptions can be handled in another order than the server sent
them, and a callback task per group costs a task switch per message. A
routed subscription here is handled in the client's reader task, in the
order the server sent its messages, without a queue in between (the
channel's subscribers have bounded buffers of their own).

This overrides one hook of nats-py, ``Client._process_msg`` (the parser's
callback for every MSG, unchanged across nats-py 2.x); the package pins
nats-py below 3 and its conformance tests would fail on any change.
Every other call is nats-py's public API.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["Handler", "RoutingClient"]

#: Called with the subject (bytes, as received), the data and the raw header
#: block (None without headers) of each message.
Handler = Callable[[bytes, bytes, bytes | None], None]


class RoutingClient(Client):
    """A nats-py `Client` whose routed subscriptions call a plain function per message."""

    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[int, Handler] = {}

    async def subscribe_routed(self, subject: str, handler: Handler) -> Subscription:
        """SUBSCRIBE to `subject`, its messages going to `handler` (no queue, no task)."""
        subscription = await self.subscribe(subject)
        self._routes[subscription._id] = handler
        return subscription

    async def unsubscribe_routed(self, subscription: Subscription) -> None:
        """Forget `subscription` at once and UNSUBSCRIBE (sent when next connected)."""
        self._routes.pop(subscription._id, None)
        if not self.is_closed:
            await subscription.unsubscribe()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._routes.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(subject, data, headers)
