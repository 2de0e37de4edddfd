"""The official ``openai`` SDK's realtime client against real servers of the service.

The client is used as its documentation says, unchanged: ``base_url`` pointed at the service,
a session token as ``api_key``. Nothing leaves the machine: each test checks where the SDK
actually connected. uvicorn answers a wrong key with 401 at the handshake; daphne, which
cannot send a status there, with its 403.
"""

import asyncio
import base64
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from openai import AsyncOpenAI
from websockets.exceptions import InvalidStatus

from tests.live.servers import production_env, serve

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
CHUNK = 4800  # 100 ms of pcm16 at 24 kHz


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    with serve(tmp, server=request.param, **production_env(LOG_LEVEL="WARNING")) as srv:
        srv.name = request.param
        yield srv


def pcm24(name: str, silence_after: float = 1.0) -> bytes:
    with wave.open(str(AUDIO / f"{name}.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    speech = soxr.resample(pcm, 16000, 24000).astype("<i2")
    quiet = np.zeros(int(24000 * silence_after), dtype="<i2")
    return np.concatenate([np.zeros(4800, dtype="<i2"), speech, quiet]).tobytes()


def client_for(server, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=api_key, base_url=server.http + "/v1", max_retries=0)


def assert_local(conn, server) -> None:
    """The SDK connected to this server's /v1/realtime, nowhere else."""
    ws = conn._connection
    assert ws.remote_address[:2] == ("127.0.0.1", server.port)
    assert ws.request.path.startswith("/v1/realtime?")
    assert ws.request.headers["Host"] == f"127.0.0.1:{server.port}"


async def stream(conn, audio: bytes, *, real_time: bool) -> None:
    """Append audio in 100 ms events, at real time (so that partials come) or at once."""
    for offset in range(0, len(audio), CHUNK):
        chunk = base64.b64encode(audio[offset : offset + CHUNK]).decode()
        await conn.input_audio_buffer.append(audio=chunk)
        await asyncio.sleep(0.1 if real_time else 0)


async def events_until(conn, kind: str, timeout: float = 90) -> list:
    """Events up to the first of ``kind``; a failed transcription or a silence of ``timeout``
    seconds fails with every event seen (the first utterance on a server waits for its
    recognizers to start: the timeout is generous)."""
    seen = []
    while True:
        try:
            event = await asyncio.wait_for(conn.recv(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind} within {timeout} s; saw {seen}") from None
        seen.append(event)
        if event.type == kind:
            return seen
        assert event.type != "conversation.item.input_audio_transcription.failed", seen


async def test_the_sdk_streams_a_spoken_wav_and_gets_deltas_and_the_transcript(server):
    session = server.create_session()
    client = client_for(server, session["session_token"])
    async with client.realtime.connect(model="gpt-4o-transcribe") as conn:
        assert_local(conn, server)
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        assert (await conn.recv()).type == "session.updated"
        # A first utterance (it also starts the server's recognizers, which give no partials
        # until they are up), then the one whose deltas are checked.
        await stream(conn, pcm24("confirm"), real_time=False)
        first = await events_until(conn, "conversation.item.input_audio_transcription.completed")
        assert first[-1].transcript == "confirm"
        await stream(conn, pcm24("remind_buy_milk_tomorrow"), real_time=True)
        events = await events_until(conn, "conversation.item.input_audio_transcription.completed")
    kinds = [e.type for e in events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.speech_stopped"
    )
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    completed = events[-1]
    assert completed.transcript == "remind me to buy milk tomorrow"
    assert len(deltas) >= 2, "partials while the user speaks become more than one delta"
    assert "".join(d.delta for d in deltas) == completed.transcript
    assert {d.item_id for d in deltas} == {completed.item_id}
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    assert committed.item_id == completed.item_id
    assert committed.previous_item_id == first[-1].item_id != completed.item_id


async def test_a_wrong_key_is_refused_at_the_handshake(server):
    client = client_for(server, "sk-not-a-session-token")
    with pytest.raises(InvalidStatus) as refused:
        async with client.realtime.connect(model="gpt-4o-transcribe"):
            pass
    assert refused.value.response.status_code == (401 if server.name == "uvicorn" else 403)


async def test_with_turn_detection_off_only_commit_ends_the_utterance(server):
    session = server.create_session()
    client = client_for(server, session["session_token"])
    async with client.realtime.connect(model="gpt-4o-transcribe") as conn:
        assert_local(conn, server)
        await conn.recv()
        await conn.session.update(
            session={"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        )
        updated = await conn.recv()
        assert updated.session.audio.input.turn_detection is None
        await stream(conn, pcm24("add_milk_to_my_list", silence_after=1.5), real_time=False)
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, "conversation.item.input_audio_transcription.completed")
    kinds = [e.type for e in events]
    assert kinds[0] == "input_audio_buffer.committed"
    assert "input_audio_buffer.speech_stopped" not in kinds
    assert "error" not in kinds
    assert events[-1].transcript == "add milk to my list"


async def test_a_malformed_event_gets_an_openai_error_and_the_socket_stays_open(server):
    session = server.create_session()
    client = client_for(server, session["session_token"])
    async with client.realtime.connect(model="gpt-4o-transcribe") as conn:
        await conn.recv()
        await conn.send_raw('{"type": "input_audio_buffer.append", "audio": 7, "event_id": "e1"}')
        error = await conn.recv()
        assert error.type == "error"
        assert error.error.type == "invalid_request_error"
        assert error.error.param == "audio"
        assert error.error.event_id == "e1"
        await conn.input_audio_buffer.clear()
        assert (await conn.recv()).type == "input_audio_buffer.cleared"


async def test_a_beta_client_with_websocket_base_url_speaks_transcription_sessions(server):
    session = server.create_session()
    client = AsyncOpenAI(
        api_key=session["session_token"],
        base_url=server.http + "/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        max_retries=0,
    )
    async with client.beta.realtime.connect(
        model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
    ) as conn:
        assert_local(conn, server)
        assert (await conn.recv()).type == "transcription_session.created"
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "turn_detection": {"type": "server_vad"},
                },
            }
        )
        assert (await conn.recv()).type == "transcription_session.updated"
        await stream(conn, pcm24("confirm"), real_time=False)
        events = await events_until(conn, "conversation.item.input_audio_transcription.completed")
    assert events[-1].transcript == "confirm"


def test_the_example_script_transcribes_a_wav_with_the_sdk(server):
    """examples/openai_realtime_transcribe.py, as docs/protocol.md tells a user to run it."""
    root = Path(__file__).resolve().parents[2]
    wav = AUDIO / "remind_buy_milk_tomorrow.wav"
    done = subprocess.run(
        [
            sys.executable,
            "examples/openai_realtime_transcribe.py",
            str(wav),
            "--manual",
            "--server",
            server.http,
            "--namespace",
            "example-user",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "[completed] remind me to buy milk tomorrow" in done.stdout.splitlines()
