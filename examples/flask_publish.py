"""Publish to the chat demo's rooms from synchronous Flask views, with `BlockingChannel`.

One `BlockingChannel` per process, shared by every request thread (it is
thread-safe), opened on first use and closed at exit. Point it at the broker
the chat demo uses, then post a message and watch it appear in the browsers:

    CHANNELS_URL=redis://127.0.0.1:6379/0 hatch run demo      # http://127.0.0.1:8000
    CHANNELS_URL=redis://127.0.0.1:6379/0 hatch run flask --app examples.flask_publish run
    curl -X POST http://127.0.0.1:5000/rooms/lobby/messages \\
         -H 'content-type: application/json' -d '{"nick": "bot", "text": "hello"}'

A Django view (or a Celery task) does the same: a module-level
`BlockingChannel`, ``channel.publish(group, message)`` in the view.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask, request

from channels_core import BlockingChannel, ChannelsError
from examples.chat.app import chat_message, group_for

__all__ = ["CHANNELS_URL", "app", "shared_channel"]

#: The chat demo's layer (a broker URL, for a chat running in another process).
CHANNELS_URL = os.environ.get("CHANNELS_URL", "memory://chat")

_channel = BlockingChannel.from_url(CHANNELS_URL)
_opening = threading.Lock()


def shared_channel() -> BlockingChannel:
    """The process's channel, opened by the first request that needs it."""
    with _opening:
        if _channel.closed:
            _channel.open()
    return _channel


app = Flask(__name__)


@app.post("/rooms/<room>/messages")
def post_message(room: str) -> tuple[dict[str, Any], int]:
    """Publish ``{"nick": ..., "text": ...}`` to the room, as the chat's browsers do."""
    body = request.get_json(silent=True)
    time = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    message = {
        "room": room,
        "nick": body.get("nick") if isinstance(body, dict) else None,
        "text": body.get("text") if isinstance(body, dict) else None,
        "time": time,
    }
    if chat_message(message) is None:
        return {"error": 'send a JSON object {"nick": "...", "text": "..."}'}, 400
    try:
        shared_channel().publish(group_for(room), message)
    except ChannelsError as error:  # e.g. the broker is down beyond the retry bound
        return {"error": f"not sent: {error}"}, 503
    return {"sent": message}, 202
