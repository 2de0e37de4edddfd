"""The in-memory channel layer of embedded mode, whose full channel is reported, never silent.

Sync code reaches the layer only through the async services, run by ``core.sync.blocking``
on the loop that owns the layer's queues.
"""

from channels import layers
from channels.exceptions import ChannelFull


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
