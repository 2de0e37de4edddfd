"""Channels' websocket consumer without a task and a database hop per message.

Copied from Channels 4.3 (``channels.consumer.AsyncConsumer.__call__`` and ``dispatch``);
see core/overrides/README.md for what it saves and when to delete it.
"""

import asyncio
import contextlib
import functools

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer


class FastAsyncWebsocketConsumer(AsyncWebsocketConsumer):
    """``AsyncWebsocketConsumer`` served by :meth:`_serve`: call it from ``__call__``."""

    async def _serve(self, scope, receive, send):
        """Channels' ``AsyncConsumer.__call__`` with a dispatch loop that costs no task per frame.

        Channels wraps every receive in a new task and an ``asyncio.wait`` over both sources;
        with 50 audio frames a second per socket that was the largest single cost of the
        audio path. Here the client's messages are awaited directly, one long-lived task
        reads the channel layer, and a lock keeps dispatch to one message at a time, as in
        Channels. A ``StopConsumer`` or an error from either side ends the consumer.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        lock = asyncio.Lock()
        serving = asyncio.current_task()
        ended: list[BaseException] = []

        async def from_layer():
            try:
                while True:
                    message = await self.channel_receive()
                    async with lock:
                        await self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the serving task
                ended.append(exc)
                serving.cancel()

        layer_reader = asyncio.create_task(from_layer())
        try:
            while True:
                message = await receive()
                async with lock:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            if not ended:
                raise
            if not isinstance(ended[0], StopConsumer):
                raise ended[0] from None
        finally:
            layer_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await layer_reader

    # Channels runs ``aclose_old_connections`` (a thread hop) before every message; this
    # service has no database on the socket path, so dispatch goes straight to the handler.
    async def dispatch(self, message):
        """Route a message to its handler, without the per-message DB clean-up.

        A client frame goes straight to :meth:`receive`, as ``websocket_receive`` would send
        it, one call shorter: it is the audio path.
        """
        if message["type"] == "websocket.receive":
            text = message.get("text")
            await self.receive(text, None if text is not None else message.get("bytes"))
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
