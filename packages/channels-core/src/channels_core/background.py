"""A task group for a layer's background work, shaped for `ChannelLayer.connect`.

A plain task group around the ``yield`` of ``connect`` would wrap the
application's own exceptions (raised in the channel's body) in an
exception group. `background_tasks` keeps them as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

__all__ = ["background_tasks"]


@asynccontextmanager
async def background_tasks() -> AsyncIterator[TaskGroup]:
    """Yield a task group whose tasks are cancelled when the body ends.

    An exception from the body is re-raised unwrapped once the tasks have
    ended; cancellation passes through as usual.
    """
    failure: BaseException | None = None
    async with anyio.create_task_group() as tasks:
        try:
            yield tasks
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:
            failure = exc
        finally:
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
