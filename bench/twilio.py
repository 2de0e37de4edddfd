"""What Twilio's JSON media messages cost on the audio path, against ``/ws/voice``'s frames.

    python -m bench.twilio [--frames N]

The same 20 ms frames of 8 kHz mu-law go through the real consumers, in one process (VAD
on, recognition off: silence), as ``/ws/voice`` binary frames, as ``/ws/voice`` base64
``audio`` messages, and as Twilio ``media`` messages on ``/ws/twilio`` (JSON with
``sequenceNumber``, ``chunk``, ``timestamp`` and a base64 payload, exactly as Twilio sends
them). It prints frames per second for each and Twilio's ratio to both, from interleaved
rounds of one run, so the ratios hold on a noisy machine.
"""

import asyncio
import base64
import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("AUDIO_RATE_LIMIT_FACTOR", "100000")
os.environ.setdefault("SOCKET_MESSAGE_RATE", "0")

import django

django.setup()

from channels.testing import WebsocketCommunicator  # noqa: E402
from django.test import override_settings  # noqa: E402

from bench.common import table  # noqa: E402
from sessions_app import services, telephony  # noqa: E402
from sessions_app.consumers import VoiceConsumer  # noqa: E402
from sessions_app.twilio_consumer import TwilioConsumer  # noqa: E402

FRAME = b"\xff" * 160  # 20 ms of mu-law silence at 8 kHz
PAYLOAD = base64.b64encode(FRAME).decode()
STREAM_SID = "MZ" + "0" * 32


async def _drain(comm) -> None:
    """Every frame sent has been handled once a ping (or a bad frame) is answered."""
    while True:
        out = await comm.receive_output(timeout=120)
        if out["type"] == "websocket.send" and "text" in out:
            return


async def voice(frames: int, *, base64_json: bool) -> float:
    record = await services.asession_create(
        namespace_id=f"bench-{time.monotonic_ns()}", key_hash="sha256:" + "0" * 64,
        device_type="bench", client_version=None,
    )  # fmt: skip
    url = services.session_connect_url(session_id=record["id"], host="localhost", secure=False)
    comm = WebsocketCommunicator(VoiceConsumer.as_asgi(), url[url.index("/ws/voice") :])
    await comm.connect()
    await comm.receive_json_from()
    await comm.send_json_to(
        {"type": "session.update", "audio": {"encoding": "mulaw", "sample_rate": 8000}}
    )
    await comm.receive_json_from()
    message = json.dumps({"type": "audio", "data": PAYLOAD})
    start = time.perf_counter()
    for _ in range(frames):
        if base64_json:
            await comm.send_to(text_data=message)
        else:
            await comm.send_to(bytes_data=FRAME)
    await comm.send_json_to({"type": "ping"})
    await _drain(comm)
    elapsed = time.perf_counter() - start
    await comm.disconnect()
    return frames / elapsed


async def twilio(frames: int) -> float:
    call = await telephony.acall_start(called="+15550000000")
    comm = WebsocketCommunicator(TwilioConsumer.as_asgi(), "/ws/twilio")
    await comm.connect()
    await comm.send_json_to({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    start_message = {
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": STREAM_SID, "callSid": "CA" + "0" * 32,
            "tracks": ["inbound"], "customParameters": {"token": call["token"]},
            "mediaFormat": telephony.MEDIA_FORMAT,
        },
    }  # fmt: skip
    await comm.send_json_to(start_message)
    start = time.perf_counter()
    for n in range(frames):
        media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20)}
        message = {
            "event": "media",
            "sequenceNumber": str(n + 2),
            "media": {**media, "payload": PAYLOAD},
            "streamSid": STREAM_SID,
        }
        await comm.send_to(text_data=json.dumps(message))
    await comm.send_to(text_data="{")  # answered with bad_json: every frame before is handled
    await _drain(comm)
    elapsed = time.perf_counter() - start
    await comm.disconnect()
    return frames / elapsed


async def main(frames: int) -> None:
    rows = []
    with override_settings(TWILIO_NAMESPACES={"*": f"bench-line-{time.monotonic_ns()}"}):
        await twilio(100)  # the first call starts the synthesis worker (spoken replies are on)
        for _ in range(3):  # interleaved rounds, so drift hits all alike
            binary = await voice(frames, base64_json=False)
            b64 = await voice(frames, base64_json=True)
            media = await twilio(frames)
            rows.append([frames, binary, b64, media, media / binary, media / b64])
    print(table(
        "20 ms mu-law frames per second through the consumer (in process, VAD on, no recognition)",
        ["frames", "/ws/voice binary", "/ws/voice base64", "Twilio media",
         "Twilio / binary", "Twilio / base64"],
        rows,
    ))  # fmt: skip


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--frames") + 1]) if "--frames" in sys.argv else 3000
    asyncio.run(main(n))
