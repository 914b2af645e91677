"""Trace context across a real Redis between two processes (issue #18).

This process publishes, in an application span, on an instrumented
channel; a subscriber in another process (tests/trace_peer.py) receives
the messages: each of its ``deliver`` spans belongs to this process's
trace, as the child of the ``publish`` span of its message, and it
records each message's publish-to-delivery latency.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from channels_core import Channel
from channels_core.telemetry import instrument

pytestmark = pytest.mark.anyio

PEER = Path(__file__).with_name("trace_peer.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # a subprocess per backend would only repeat the same exchange


async def test_a_delivery_in_another_process_joins_the_publishers_trace(redis_url: str) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    group, count = f"traces-{secrets.token_hex(4)}", 3
    command = [sys.executable, str(PEER), redis_url, group, str(count)]
    async with Channel.from_url(redis_url) as channel:
        instrument(channel, tracer_provider=tracer_provider, traces=True, delivery_latency=True)
        async with await anyio.open_process(command) as peer:
            assert peer.stdout is not None
            lines = TextReceiveStream(peer.stdout)
            output = ""
            with anyio.fail_after(20):
                async for chunk in lines:
                    output += chunk
                    if "ready" in output:
                        break
                tracer = tracer_provider.get_tracer("app")
                for number in range(count):
                    with tracer.start_as_current_span(f"request {number}"):
                        await channel.publish(group, number)
                async for chunk in lines:
                    output += chunk
            assert await peer.wait() == 0, output
    tracer_provider.shutdown()
    report = json.loads(output.strip().splitlines()[-1])
    assert report["pid"] != os.getpid()
    assert report["messages"] == list(range(count))

    publishes = {
        span.context.span_id: span
        for span in exporter.get_finished_spans()
        if span.name == "publish"
    }
    delivers = report["spans"]
    assert len(publishes) == len(delivers) == count
    for deliver in delivers:
        assert (deliver["name"], deliver["kind"]) == ("deliver", "CONSUMER")
        publish = publishes.pop(deliver["parent_span_id"])  # each publish once
        assert deliver["trace_id"] == publish.context.trace_id
        assert deliver["attributes"] == {"channels.layer": "redis"}
    assert report["latency"]["count"] == count
    assert 0 <= report["latency"]["sum"] < 5
