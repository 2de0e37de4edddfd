"""Sending to the channel layer from sync code, safely on every back end.

``InMemoryChannelLayer`` queues belong to the event loop that serves the sockets. A handler
thread that used ``async_to_sync`` would run ``group_send`` on a loop of its own and poke those
queues from the wrong thread, so sync senders hand the coroutine to the serving loop instead.
"""

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

_serving_loop: asyncio.AbstractEventLoop | None = None


def remember_serving_loop() -> None:
    """Called from the ASGI application: the loop that owns the sockets of this process."""
    global _serving_loop
    _serving_loop = asyncio.get_running_loop()


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop`` (any loop class: asyncio's, uvloop's)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def run_on_layer(coro_fn, *args, timeout: float = 10.0):
    """Run ``coro_fn(*args)`` (a channel-layer coroutine) from sync code and wait for it."""
    loop = _serving_loop
    if loop is not None and loop.is_running() and not _in_loop_thread(loop):
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), loop).result(timeout=timeout)
    return async_to_sync(coro_fn)(*args)


def group_send_sync(group: str, message: dict) -> None:
    run_on_layer(get_channel_layer().group_send, group, message)


def send_sync(channel: str, message: dict, *, alias: str = "default") -> None:
    run_on_layer(get_channel_layer(alias).send, channel, message)
