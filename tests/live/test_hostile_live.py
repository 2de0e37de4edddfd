"""The issue's attack on a real server: hostile frames mid-utterance must not deafen a worker.

Under uvicorn and daphne with a pool of two recognizers: two clients each start an
utterance, send a frame that used to kill the consumer (a 60 KB nest of brackets; a reminder
absurdly far ahead), and vanish. A newcomer must then get its transcript at once, the gauge
must read no open socket, and the log must hold no traceback and nothing the users said.
"""

import asyncio
import json
import urllib.request

import pytest
import websockets

from tests.live.servers import serve, until
from tests.test_speech import load

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

NESTED = "[" * 30000 + "]" * 30000


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    env = {"RECOGNIZER_POOL_SIZE": "2", "RECOGNIZER_PROCESSES": "1", "LOG_LEVEL": "INFO"}
    with serve(tmp, server=request.param, **env) as srv:
        yield srv


async def _stream(ws, audio: bytes) -> None:
    for offset in range(0, len(audio), 640):
        await ws.send(audio[offset : offset + 640])
        if offset // 640 % 25 == 0:
            await asyncio.sleep(0)


def _sockets_open(server) -> float:
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("voice_sockets_open "):
                return float(line.split()[1])
    raise AssertionError("no voice_sockets_open in /metrics")


async def test_clients_that_vanish_after_hostile_frames_mid_utterance_leave_the_worker_hearing(
    server,
):
    audio = load("remind_buy_milk_tomorrow")
    hostile = [
        NESTED,
        json.dumps({"type": "text", "text": "remind me to pay rent in 99999999999 hours"}),
    ]
    for i, frame in enumerate(hostile):
        session = server.create_session(namespace_id=f"attacker-{i}")
        ws = await websockets.connect(server.ws_url(session))
        await ws.recv()  # session.ready
        await _stream(ws, audio[: len(audio) // 2])
        await until(ws, lambda e: e["type"] == "speech.started")
        await ws.send(frame)
        await until(ws, lambda e: e["type"] in ("error", "response"))  # answered, not dropped
        ws.transport.abort()  # gone without a close frame, mid-utterance
    victim = server.create_session(namespace_id="victim")
    async with websockets.connect(server.ws_url(victim)) as ws:
        await ws.recv()
        await _stream(ws, load("what_is_on_my_list"))
        events = await until(ws, lambda e: e["type"] == "transcript.final", timeout=15)
        assert events[-1]["text"] == "what is on my list"
    for _ in range(50):
        if _sockets_open(server) == 0:
            break
        await asyncio.sleep(0.1)
    assert _sockets_open(server) == 0
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "pay rent" not in log and "[[[[" not in log
