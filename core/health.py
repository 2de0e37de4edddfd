"""Probes for the platform: ``/healthz`` (the process is up) and ``/readyz`` (it can serve)."""

import asyncio

from channels.layers import get_channel_layer
from django.http import JsonResponse

from core.kv import aget_kv


def healthz(request):
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


async def _acache_ok() -> bool:
    return await aget_kv().ping()


async def layer_round_trip(timeout: float = 3) -> None:
    """Send a message to a fresh channel and receive it back (raises if the layer fails)."""
    layer = get_channel_layer()
    channel = await asyncio.wait_for(layer.new_channel("probe."), timeout)
    await asyncio.wait_for(layer.send(channel, {"type": "probe.ping"}), timeout)
    await asyncio.wait_for(layer.receive(channel), timeout)


async def readyz(request):
    """The cache and the channel layer answer; 503 with the reason when one does not."""
    failing = {}
    try:
        await asyncio.wait_for(_acache_ok(), 3)
    except Exception as exc:
        failing["cache"] = type(exc).__name__
    try:
        await layer_round_trip()
    except Exception as exc:
        failing["channel_layer"] = type(exc).__name__
    if failing:
        return JsonResponse({"status": "unavailable", "failing": failing}, status=503)
    return JsonResponse({"status": "ready"})
