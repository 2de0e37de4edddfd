"""What Channels' per-message ``aclose_old_connections`` would cost on the audio path.

    python -m bench.dispatch [--frames N]

Channels 4.2+ runs ``aclose_old_connections`` (a thread-sensitive ``sync_to_async`` hop)
before every message a consumer handles. ``VoiceConsumer.dispatch`` skips it, since the
socket path touches no database. This streams the same 20 ms PCM frames through the real
consumer, in one process, with and without that hop, and prints frames per second for both
and their ratio (taken in one run, so the ratio holds on a noisy machine).
"""

import asyncio
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("AUDIO_RATE_LIMIT_FACTOR", "100000")

import django

django.setup()

from channels.consumer import AsyncConsumer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402

from bench.common import table  # noqa: E402
from sessions_app import services  # noqa: E402
from sessions_app.consumers import VoiceConsumer  # noqa: E402

FRAME = b"\x00\x00" * 320


class WithDbCleanup(VoiceConsumer):
    """The same consumer with Channels' own dispatch (and its per-message thread hop)."""

    dispatch = AsyncConsumer.dispatch


async def frames_per_second(consumer, frames: int) -> float:
    record = services.session_create(
        namespace_id=f"bench-{time.monotonic_ns()}", key_hash="sha256:" + "0" * 64,
        device_type="bench", client_version=None,
    )  # fmt: skip
    url = services.session_connect_url(session_id=record["id"], host="localhost", secure=False)
    comm = WebsocketCommunicator(consumer.as_asgi(), url[url.index("/ws/voice") :])
    await comm.connect()
    await comm.receive_json_from()
    start = time.perf_counter()
    for _ in range(frames):
        await comm.send_to(bytes_data=FRAME)
    await comm.send_json_to({"type": "ping"})
    while (await comm.receive_json_from(timeout=60))["type"] != "pong":
        pass
    elapsed = time.perf_counter() - start
    await comm.disconnect()
    return frames / elapsed


async def main(frames: int) -> None:
    rows = []
    for _ in range(3):  # interleaved rounds, so drift hits both alike
        ours = await frames_per_second(VoiceConsumer, frames)
        theirs = await frames_per_second(WithDbCleanup, frames)
        rows.append([frames, ours, theirs, ours / theirs])
    print(table(
        "Audio frames per second through the consumer (in process, VAD on, no recognition)",
        ["frames", "our dispatch", "Channels' dispatch", "ratio"], rows,
    ))  # fmt: skip


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--frames") + 1]) if "--frames" in sys.argv else 3000
    asyncio.run(main(n))
