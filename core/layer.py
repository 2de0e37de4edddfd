"""Sending to the channel layer from sync code, safely on every back end.

``InMemoryChannelLayer`` queues belong to the event loop that serves the sockets. A handler
thread that used ``async_to_sync`` would run ``group_send`` on a loop of its own and poke those
queues from the wrong thread, so sync senders hand the coroutine to the serving loop instead.
"""

import asyncio

from asgiref.sync import async_to_sync
from channels import layers
from channels.exceptions import ChannelFull
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


class InMemoryChannelLayer(layers.InMemoryChannelLayer):
    """Channels' in-memory layer (embedded mode), except that a full channel is not silent.

    Channels' ``group_send`` drops a message for a channel whose queue is full and says
    nothing. Here the loss is counted, and once the channel's queue has drained the next
    ``receive`` returns ``{"type": "layer.overflow", "lost": N}``: the socket turns that into
    the ``events_lost`` error, and the client resumes from the last seq it saw.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lost: dict[str, int] = {}

    async def group_send(self, group, message):
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                self._lost[channel] = self._lost.get(channel, 0) + 1

    async def receive(self, channel):
        lost = self._lost.get(channel)
        if lost:
            queue = self.channels.get(channel)
            if queue is None or queue.empty():
                del self._lost[channel]
                return {"type": "layer.overflow", "lost": lost}
        return await super().receive(channel)

    async def group_discard(self, group, channel):
        await super().group_discard(group, channel)
        self._lost.pop(channel, None)

    async def flush(self):
        await super().flush()
        self._lost = {}
