"""Speech through the whole path: audio frames in, transcripts, intents and tasks out.

The WAVs in ``tests/fixtures/audio`` were spoken by espeak-ng (``bench/synth.py``); the
recognizer is the real PocketSphinx engine with the model its PyPI package ships.
"""

import asyncio
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from django.test import override_settings

from bench.synth import FIXTURE_PHRASES
from sessions_app.audio.formats import MULAW_TO_PCM, Decoder, FormatError
from sessions_app.audio.vad import Segmenter
from tests.conftest import aget, connect, create_session, hold, receive_until

pytestmark = pytest.mark.django_db(databases=[])

AUDIO = Path(__file__).parent / "fixtures" / "audio"
FAST = override_settings(AUDIO_RATE_LIMIT_FACTOR=1000)


def load(name: str) -> bytes:
    with wave.open(str(AUDIO / f"{name}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def last_sound(pcm16: bytes) -> int:
    """Sample index just after the last sample over about -50 dBFS (amplitude 100)."""
    samples = np.abs(np.frombuffer(pcm16, dtype="<i2").astype(np.int32))
    return int(np.nonzero(samples > 100)[0][-1]) + 1


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law by nearest table entry (the inverse of the service's decode table)."""
    order = np.argsort(MULAW_TO_PCM)
    table = MULAW_TO_PCM[order]
    idx = np.clip(np.searchsorted(table, pcm), 1, 255)
    nearer = np.where(np.abs(table[idx - 1] - pcm) <= np.abs(table[idx] - pcm), idx - 1, idx)
    return order[nearer].astype(np.uint8).tobytes()


async def stream(
    comm, audio: bytes, *, frame_bytes: int = 640, seconds_per_frame: float = 0.0
) -> None:
    """Send audio in frames: as fast as the socket takes them, or paced (0.02 = real time)."""
    for offset in range(0, len(audio), frame_bytes):
        await comm.send_to(bytes_data=audio[offset : offset + frame_bytes])
        if seconds_per_frame:
            await asyncio.sleep(seconds_per_frame)
        elif offset // frame_bytes % 25 == 0:
            await asyncio.sleep(0)


async def final_for(comm, timeout: float = 20) -> list[dict]:
    return await receive_until(comm, "transcript.final", timeout=timeout)


# the whole path -------------------------------------------------------------------------------
@FAST
async def test_a_spoken_command_becomes_a_transcript_a_task_and_a_result(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await stream(comm, load("add_milk_to_my_list"))
    events = await final_for(comm)
    types = [e["type"] for e in events]
    assert types[0] == "speech.started" and "speech.stopped" in types
    assert events[-1]["text"] == "add milk to my list"
    more = await receive_until(comm, "response")
    created = next(e for e in more if e["type"] == "task.created")["task"]
    assert created["type"] == "todo"
    assert more[-1]["text"] == "Added milk to your list."
    assert more[-1]["utterance_id"] == events[-1]["utterance_id"]
    assert created["state"] == "queued", "a to-do stays on the list until it is done"
    await comm.send_json_to({"type": "text", "text": "mark milk as done"})
    while True:
        event = (await receive_until(comm, "task.updated"))[-1]
        if event["task"]["state"] == "completed":
            break
    result = await aget(api, f"/api/v1/tasks/{created['id']}/result")
    assert result.json() == {"text": "milk", "done": True}
    stats = (await aget(api, f"/api/v1/sessions/{session['id']}/stats")).json()
    assert stats["audio_chunks_received"] == stats["audio_chunks_processed"] > 100
    await comm.disconnect()


@FAST
@pytest.mark.parametrize(
    ("fixture", "intent", "task_type"),
    [
        ("remind_buy_milk_tomorrow", "reminder", "reminder"),
        ("create_a_task_fix_the_bike", "todo", "todo"),
        ("add_milk_to_my_list", "todo", "todo"),
        ("take_a_note_park_level_three", "note", "note"),
        ("what_is_on_my_list", "list", None),
        ("cancel_the_last_task", "cancel_last", None),
        ("confirm", "confirm", None),
    ],
)
async def test_each_spoken_intent_has_its_outcome(api, fixture, intent, task_type):
    comm, _ = await connect(create_session(api))
    await stream(comm, load(fixture))
    final = (await final_for(comm))[-1]
    assert final["text"] == FIXTURE_PHRASES[fixture][0]
    events = await receive_until(comm, "response")
    assert events[-1]["intent"] == intent, (final["text"], events[-1])
    created = [e["task"]["type"] for e in events if e["type"] == "task.created"]
    assert created == ([task_type] if task_type else [])
    await comm.disconnect()


@FAST
async def test_partial_transcripts_come_before_the_final_one(api):
    comm, _ = await connect(create_session(api))
    await stream(comm, load("remind_buy_milk_tomorrow"), seconds_per_frame=0.01)
    events = await final_for(comm)
    partials = [e for e in events if e["type"] == "transcript.partial"]
    assert partials, "a 2-second command yields partials"
    assert {p["utterance_id"] for p in partials} == {events[-1]["utterance_id"]}
    assert events[-1]["text"] == "remind me to buy milk tomorrow"
    await comm.disconnect()


@FAST
async def test_audio_commit_ends_the_utterance_without_waiting_for_silence(api):
    comm, _ = await connect(create_session(api))
    audio = load("what_is_on_my_list")
    speech_end = len(audio) - 16000 * 2 * 9 // 10  # drop most of the silent tail
    await stream(comm, audio[:speech_end])
    await comm.send_json_to({"type": "audio.commit"})
    events = await final_for(comm)
    assert events[-1]["text"] == "what is on my list"
    await comm.disconnect()


@FAST
async def test_mulaw_at_8_khz_is_decoded_resampled_and_recognized(api):
    comm, _ = await connect(create_session(api))
    await comm.send_json_to(
        {"type": "session.update", "audio": {"encoding": "mulaw", "sample_rate": 8000}}
    )
    assert (await comm.receive_json_from(timeout=5))["audio"]["encoding"] == "mulaw"
    pcm16k = np.frombuffer(load("remind_buy_milk_tomorrow"), dtype="<i2")
    telephony = mulaw_encode(soxr.resample(pcm16k, 16000, 8000).astype(np.int16))
    await stream(comm, telephony, frame_bytes=160)  # 20 ms at 8 kHz, one byte a sample
    events = await final_for(comm)
    assert events[-1]["text"] == "remind me to buy milk tomorrow"
    await comm.disconnect()


@FAST
async def test_pcm_at_48_khz_is_resampled_and_recognized(api):
    comm, _ = await connect(create_session(api))
    await comm.send_json_to(
        {"type": "session.update", "audio": {"encoding": "pcm_s16le", "sample_rate": 48000}}
    )
    await comm.receive_json_from(timeout=5)
    pcm16k = np.frombuffer(load("what_is_on_my_list"), dtype="<i2")
    await stream(
        comm, soxr.resample(pcm16k, 16000, 48000).astype(np.int16).tobytes(), frame_bytes=1920
    )
    assert (await final_for(comm))[-1]["text"] == "what is on my list"
    await comm.disconnect()


@FAST
async def test_noise_gives_no_task_and_never_a_crash(api):
    comm, _ = await connect(create_session(api))
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(16000 * 2) * 6000).astype(np.int16).tobytes()
    await stream(comm, noise + b"\x00" * 32000)
    await comm.send_json_to({"type": "audio.commit"})
    await comm.send_json_to({"type": "ping"})
    events = await receive_until(comm, "pong", timeout=20)
    await asyncio.sleep(1.5)
    while not await comm.receive_nothing(timeout=0.5):
        events.append(await comm.receive_json_from())
    assert not any(e["type"] == "task.created" for e in events)
    await comm.send_json_to({"type": "ping"})
    assert (await receive_until(comm, "pong"))[-1]["type"] == "pong"
    await comm.disconnect()


@FAST
async def test_the_socket_answers_while_an_utterance_is_being_recognized(api):
    comm, _ = await connect(create_session(api))
    audio = load("remind_buy_milk_tomorrow")
    await stream(comm, audio[: len(audio) // 2])
    await comm.send_json_to({"type": "ping"})
    events = await receive_until(comm, "pong")
    assert not any(e["type"] == "transcript.final" for e in events)
    await stream(comm, audio[len(audio) // 2 :])
    await final_for(comm)
    await comm.disconnect()


# the parts ------------------------------------------------------------------------------------
# ITU-T Recommendation G.711 (11/1988), Table 2a (mu-law): the eight segments' first decoder
# output values and their step sizes, on the standard's scale (largest output 8031). A
# character is sign bit P (1: positive), segment S (3 bits), step Q (4 bits); on the line all
# eight bits are inverted. 16-bit PCM is that scale times 4 (largest 32124).
G711_SEGMENT_START = (0, 33, 99, 231, 495, 1023, 2079, 4191)
G711_SEGMENT_STEP = (2, 4, 8, 16, 32, 64, 128, 256)
# Spot values from the standard's table, written out (byte as sent on the line -> PCM16).
G711_REFERENCE = {
    0xFF: 0, 0x7F: 0,  # positive and negative zero
    0xFE: 8, 0x7E: -8, 0xF0: 120, 0x70: -120,  # segment 0: steps of 2 (x4)
    0xEF: 132, 0x6F: -132, 0xE0: 372,  # segment 1 starts at 33, steps of 4
    0xDF: 396, 0xCF: 924, 0xBF: 1980, 0xAF: 4092, 0x9F: 8316,  # the other segments' starts
    0x8F: 16764, 0x81: 31100, 0x80: 32124, 0x00: -32124, 0x0F: -16764,  # the last segment
}  # fmt: skip


def _g711_decode(byte: int) -> int:
    """One mu-law character to PCM16 from Table 2a, independently of the service's table."""
    character = byte ^ 0xFF
    positive = not character & 0x80
    segment = (character >> 4) & 0x07
    step = character & 0x0F
    value = 4 * (G711_SEGMENT_START[segment] + G711_SEGMENT_STEP[segment] * step)
    return value if positive else -value


def test_mulaw_decoding_matches_the_g711_table():
    """Every one of the 256 characters against G.711's Table 2a, not against our own formula."""
    for byte, pcm in G711_REFERENCE.items():
        assert _g711_decode(byte) == pcm, hex(byte)  # the derivation agrees with the table
        assert int(MULAW_TO_PCM[byte]) == pcm, hex(byte)
    assert [int(v) for v in MULAW_TO_PCM] == [_g711_decode(b) for b in range(256)]
    decoded = Decoder(encoding="mulaw", sample_rate=16000).decode(bytes(G711_REFERENCE))
    assert decoded.tolist() == list(G711_REFERENCE.values())


def test_resampling_keeps_duration_across_frames():
    decoder = Decoder(encoding="pcm_s16le", sample_rate=48000)
    frame = (np.sin(np.arange(960) / 10) * 8000).astype("<i2").tobytes()
    out = sum(len(decoder.decode(frame)) for _ in range(100)) + len(decoder.flush())
    assert abs(out - 32000) <= 16  # 2 s at 16 kHz


def test_an_odd_pcm16_frame_is_a_format_error():
    with pytest.raises(FormatError):
        Decoder(encoding="pcm_s16le", sample_rate=16000).decode(b"\x00" * 3)


def test_vad_finds_one_utterance_in_a_spoken_command():
    segmenter = Segmenter()
    audio = load("create_a_task_fix_the_bike")
    kinds = []
    for offset in range(0, len(audio), 640):
        kinds += [kind for kind, _ in segmenter.feed(audio[offset : offset + 640])]
    assert kinds.count("start") == 1 and kinds.count("stop") == 1
    assert kinds.index("start") < kinds.index("stop")


def test_vad_hears_no_speech_in_silence():
    segmenter = Segmenter()
    assert segmenter.feed(b"\x00" * 32000 * 3) == []


@FAST
async def test_a_dead_recognizer_worker_fails_only_the_utterance_in_flight(api):
    from sessions_app.audio.recognizer import get_pool

    comm, _ = await connect(create_session(api))
    audio = load("cancel_the_last_task")
    await stream(comm, audio[: len(audio) // 2])
    await receive_until(comm, "speech.started")
    for worker in get_pool()._workers:
        worker.process.kill()
        worker.process.join(timeout=5)
    await stream(comm, audio[len(audio) // 2 :])
    error = (await receive_until(comm, "error", timeout=20))[-1]
    assert error["code"] == "recognition_failed"
    await stream(comm, load("what_is_on_my_list"))
    assert (await final_for(comm))[-1]["text"] == "what is on my list"
    await comm.disconnect()


async def test_one_recognizer_hears_a_short_first_utterance_then_a_long_one(monkeypatch, pools):
    """Two connections' first utterances on one pool slot, so both get the second pass. A
    live call with more audio than the whole utterance decoded before it on the same
    PocketSphinx decoder crashed the worker (a segfault); live audio goes in 20 ms pieces now.
    The batch sizes are the ones a Realtime client's burst gave."""
    monkeypatch.setenv("POCKETSPHINX_SECOND_PASS", "first")  # the default; the worker inherits it
    pool = pools("sessions_app.audio.pocketsphinx_engine.PocketSphinxEngine", 1)
    heard = []
    short = load("confirm")[:45120]
    long = bytes(6400) + load("take_a_note_park_level_three") + bytes(48000)
    for batches in ([short], [long[:52800], long[52800:]]):
        recognizer = await pool.acquire(timeout=30)
        try:
            await recognizer.start({"source_rate": 24000})
            for batch in batches:
                await recognizer.feed(batch)
            heard.append((await recognizer.finish()).text)
        finally:
            pool.release(recognizer)
    assert heard == ["confirm", "take a note park on level three"]
    assert pool.alive_processes() == 1


@FAST
async def test_speech_faster_than_recognition_meets_a_bounded_backlog_then_4429(api, monkeypatch):
    from sessions_app.audio import pipeline
    from sessions_app.audio.recognizer import RecognizerPool

    slow = RecognizerPool(engine_path="tests.slow_engine.SlowEngine", size=1, processes=1)
    monkeypatch.setattr(pipeline, "get_pool", lambda: slow)
    try:
        comm, _ = await connect(create_session(api))
        speech = load("take_a_note_park_level_three")[16000 * 2 * 3 // 10 : -16000 * 2]
        await stream(comm, speech * 12)  # ~20 s of speech, sent at once
        said = []
        out = await comm.receive_output(timeout=20)
        while out["type"] != "websocket.close":
            said.append(json.loads(out["text"]))
            out = await comm.receive_output(timeout=20)
        assert out["code"] == 4429
        assert said[-1]["message"] == "recognition cannot keep up"  # not the rate limit
    finally:
        slow.stop()
