"""A 3-node throwaway cluster: a killed node under load."""

from __future__ import annotations

import anyio
import pytest

from channels_core import Backoff, Channel, MessagesLost, Subscriber
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsCluster

pytestmark = pytest.mark.anyio

COUNT = 3000
FAST = Backoff(initial=0.05, maximum=0.2)


async def collect(
    subscriber: Subscriber, into: list[object], done: anyio.Event, sent: list[int]
) -> None:
    """Messages and gap signals (as "gap"), until the last message.

    At a gap signal, `sent` (the number of messages published so far) is
    appended to `into` after "gap".
    """
    with anyio.fail_after(30):
        while True:
            try:
                message = (await subscriber.receive()).message
            except MessagesLost:
                into.extend(("gap", sent[0]))
                continue
            if message == "probe":
                continue
            into.append(message)
            if message == COUNT - 1:
                done.set()
                return


async def test_a_killed_node_under_load(nats_cluster: NatsCluster) -> None:
    first, second, third = nats_cluster.servers

    def layer(seed: str) -> NatsChannelLayer:
        return NatsChannelLayer.from_url(seed, reconnect_backoff=FAST, ping_interval=1)

    on_dead, on_survivor = layer(first.url), layer(second.url)
    async with (
        Channel(on_dead, buffer_size=COUNT * 2) as dead_node,
        Channel(on_survivor, buffer_size=COUNT * 2) as survivor,
        Channel(layer(third.url)) as publisher,
        dead_node.subscribe("load") as on_dead_node,
        survivor.subscribe("load") as on_surviving_node,
    ):
        # Interest reaches the other nodes through the routes a moment later.
        for subscriber in (on_dead_node, on_surviving_node):
            with anyio.fail_after(10):
                while True:
                    await publisher.publish("load", "probe")
                    with anyio.move_on_after(0.05):
                        if (await subscriber.receive()).message == "probe":
                            break
        received: dict[str, list[object]] = {"dead": [], "survivor": []}
        sent = [0]
        finished = {"dead": anyio.Event(), "survivor": anyio.Event()}
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collect, on_dead_node, received["dead"], finished["dead"], sent)
            tasks.start_soon(
                collect, on_surviving_node, received["survivor"], finished["survivor"], sent
            )
            for number in range(COUNT):
                await publisher.publish("load", number)
                sent[0] = number + 1
                if number == COUNT // 3:
                    await anyio.to_thread.run_sync(first.stop)
                if number % 20 == 0:
                    await anyio.sleep(0.001)
            with anyio.fail_after(20):
                await finished["survivor"].wait()
                await finished["dead"].wait()

    assert received["survivor"] == list(range(COUNT))  # no gap, nothing lost, in order
    dead = received["dead"]
    assert dead.count("gap") == 1
    gap = dead.index("gap")
    before, sent_at_gap, after = dead[:gap], dead[gap + 1], dead[gap + 2 :]
    assert before == list(range(len(before)))
    resumed = after[0]
    assert isinstance(resumed, int)
    assert after == list(range(resumed, COUNT)), "everything after the gap, in order"
    assert isinstance(sent_at_gap, int)
    assert resumed <= sent_at_gap, "everything published after the gap signal arrives"
    assert on_dead.stats().reconnects == 1
    assert on_survivor.stats().connection_losses == 0
