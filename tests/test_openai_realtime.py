"""``/v1/realtime``, the OpenAI-Realtime transcription dialect, through the real ASGI app.

The official SDK against real servers is in tests/live/test_openai_realtime_live.py; here are
the rules of the dialect one by one (CONTRACT section 2c, docs/protocol.md). Event shapes are
OpenAI's published ones (the ``openai`` package's ``types/realtime`` and
``types/beta/realtime``), field for field.
"""

import asyncio
import base64
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from sessions_app.realtime_openai import ALAW_TO_PCM, delta_for, stable_text
from tests.conftest import adelete, aget, create_session, hold, receive_until
from tests.test_speech import last_sound
from voiceproject.asgi import application

pytestmark = pytest.mark.django_db(databases=[])

AUDIO = Path(__file__).parent / "fixtures" / "audio"
FAST = override_settings(AUDIO_RATE_LIMIT_FACTOR=1000)


def pcm24(name: str, *, silence_after: float = 1.2) -> bytes:
    """A fixture WAV as OpenAI's pcm16: 24 kHz, 16-bit little-endian, mono, with silence.

    ``silence_after=0`` also drops the WAV's own silent tail from 50 ms after the last sound
    (over about -50 dBFS), so that the speech has not ended by VAD when the audio does: even
    a whole command's early end needs 240 ms of silence.
    """
    with wave.open(str(AUDIO / f"{name}.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if not silence_after:
        pcm = pcm[: last_sound(pcm.tobytes()) + 800]
    speech = soxr.resample(pcm, 16000, 24000).astype("<i2")
    quiet = np.zeros(int(24000 * silence_after), dtype="<i2")
    return np.concatenate([np.zeros(4800, dtype="<i2"), speech, quiet]).tobytes()


def auth(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def open_socket(session: dict, *, query: str = "model=gpt-4o-transcribe", headers=()):
    comm = WebsocketCommunicator(
        application,
        f"/v1/realtime?{query}",
        headers=auth(session["session_token"]) + list(headers),
    )
    connected, _ = await comm.connect()
    assert connected
    created = await comm.receive_json_from(timeout=5)
    return comm, created


async def append(comm, audio: bytes, chunk: int = 4800) -> None:
    for offset in range(0, len(audio), chunk):
        data = base64.b64encode(audio[offset : offset + chunk]).decode()
        await comm.send_json_to({"type": "input_audio_buffer.append", "audio": data})
        await asyncio.sleep(0)


async def until(comm, event_type: str, timeout: float = 60) -> list[dict]:
    """Events up to the first of ``event_type`` (the first utterance of a test process waits
    for the recognizer pool to start: the timeout is generous)."""
    return await receive_until(comm, event_type, timeout)


def assert_openai_error(event: dict, code: str, param=None) -> None:
    assert event["type"] == "error"
    assert event["event_id"].startswith("event_")
    assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
    assert event["error"]["type"] == "invalid_request_error"
    assert event["error"]["code"] == code
    assert event["error"]["param"] == param
    assert event["error"]["message"]


# the handshake --------------------------------------------------------------------------------
async def test_the_session_token_is_the_api_key_and_session_created_comes_first(backend, api):
    session = hold(api, create_session(api))
    comm, created = await open_socket(session)
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_")
    assert created["session"]["type"] == "transcription"
    audio_in = created["session"]["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"]["type"] == "server_vad"
    assert audio_in["turn_detection"]["silence_duration_ms"] == 500
    assert audio_in["turn_detection"]["prefix_padding_ms"] == 300
    response = await aget(api, f"/api/v1/sessions/{session['id']}")
    assert response.json()["status"] == "connected"
    await comm.disconnect()


async def _handshake(headers, *, extensions: bool) -> dict:
    """The server's answer to a handshake: the denial response or accept/close."""
    comm = WebsocketCommunicator(application, "/v1/realtime?model=x", headers=headers)
    if extensions:
        comm.scope["extensions"] = {"websocket.http.response": {}}
    await comm.send_input({"type": "websocket.connect"})
    first = await comm.receive_output(timeout=5)
    if first["type"] != "websocket.http.response.start":
        return first
    body = await comm.receive_output(timeout=5)
    return {**first, "body": json.loads(body["body"])}


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer not-a-session-token")],
        [(b"authorization", b"Basic dXNlcjpwYXNz")],
    ],
    ids=["no key", "a wrong key", "not a bearer key"],
)
async def test_a_wrong_key_is_refused_at_the_handshake_with_401(api, headers):
    answer = await _handshake(headers, extensions=True)
    assert answer["status"] == 401
    assert answer["body"]["error"]["type"] == "invalid_request_error"
    assert answer["body"]["error"]["code"] == "invalid_api_key"


async def test_a_server_without_denial_responses_refuses_a_wrong_key_with_its_own_403(api):
    """Daphne cannot send a status at the handshake: a close before accept is its 403."""
    answer = await _handshake([(b"authorization", b"Bearer nope")], extensions=False)
    assert answer["type"] == "websocket.close"


async def test_the_token_of_an_ended_session_is_refused_with_404(api):
    session = hold(api, create_session(api))
    assert (await adelete(api, f"/api/v1/sessions/{session['id']}")).status_code == 200
    answer = await _handshake(auth(session["session_token"]), extensions=True)
    assert answer["status"] == 404
    assert answer["body"]["error"]["code"] == "session_not_found"


async def test_a_browser_may_send_the_key_as_a_subprotocol(api):
    session = create_session(api)
    comm = WebsocketCommunicator(
        application,
        "/v1/realtime?intent=transcription",
        subprotocols=["realtime", f"openai-insecure-api-key.{session['session_token']}"],
    )
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "realtime"
    assert (await comm.receive_json_from(timeout=5))["type"] == "session.created"
    await comm.disconnect()


async def test_a_newer_socket_of_the_same_key_takes_over(api):
    session = create_session(api)
    old, _ = await open_socket(session)
    new, _ = await open_socket(session)
    said = await old.receive_json_from(timeout=5)
    assert said["type"] == "error" and said["error"]["code"] == "replaced"
    assert (await old.receive_output(timeout=5))["code"] == 4409
    await new.disconnect()


# session configuration ------------------------------------------------------------------------
async def test_session_update_in_the_ga_shape_is_answered_with_the_effective_session(api):
    comm, _ = await open_socket(create_session(api))
    await comm.send_json_to(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "any-model-name", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                    }
                },
            },
        }
    )
    updated = await comm.receive_json_from(timeout=5)
    assert updated["type"] == "session.updated"
    audio_in = updated["session"]["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcmu"}
    assert audio_in["transcription"]["model"] == "any-model-name"
    assert audio_in["transcription"]["language"] == "en"
    assert audio_in["turn_detection"]["silence_duration_ms"] == 300
    assert audio_in["turn_detection"]["prefix_padding_ms"] == 300
    await comm.disconnect()


async def test_a_language_the_recognizer_lacks_is_refused_and_changes_nothing(api):
    comm, _ = await open_socket(create_session(api))

    def update(transcription):
        audio_in = {"transcription": transcription, "turn_detection": None}
        return {"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": audio_in}}}  # fmt: skip

    await comm.send_json_to(update({"model": "gpt-4o-transcribe", "language": "xx"}))
    assert_openai_error(
        await comm.receive_json_from(timeout=5),
        "invalid_value",
        "session.audio.input.transcription.language",
    )
    await comm.send_json_to({"type": "session.update", "session": {"type": "transcription"}})
    unchanged = (await comm.receive_json_from(timeout=5))["session"]["audio"]["input"]
    assert unchanged["turn_detection"]["type"] == "server_vad"  # the refused update's null
    assert unchanged["transcription"]["language"] is None
    await comm.send_json_to(update({"language": "en", "prompt": "milk, eggs; the bike"}))
    updated = (await comm.receive_json_from(timeout=5))["session"]["audio"]["input"]
    assert updated["transcription"]["language"] == "en"
    assert updated["turn_detection"] is None
    await comm.disconnect()


async def test_beta_clients_get_transcription_session_events_in_the_beta_shape(api):
    session = create_session(api)
    comm, created = await open_socket(
        session, query="intent=transcription", headers=[(b"openai-beta", b"realtime=v1")]
    )
    assert created["type"] == "transcription_session.created"
    assert created["session"]["input_audio_format"] == "pcm16"
    await comm.send_json_to(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "g711_alaw",
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": None,
            },
        }
    )
    updated = await comm.receive_json_from(timeout=5)
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_alaw"
    assert updated["session"]["input_audio_transcription"]["model"] == "whisper-1"
    assert updated["session"]["turn_detection"] is None
    await comm.disconnect()


async def test_unknown_query_parameters_and_any_model_are_accepted(api):
    session = create_session(api)
    comm, created = await open_socket(session, query="model=whatever-9&foo=bar&intent=x")
    assert created["type"] == "session.created"
    await comm.disconnect()


async def test_a_realtime_speech_to_speech_session_is_refused_with_an_error(api):
    comm, _ = await open_socket(create_session(api))
    await comm.send_json_to({"type": "session.update", "session": {"type": "realtime"}})
    assert_openai_error(
        await comm.receive_json_from(timeout=5), "unsupported_session_type", "session.type"
    )
    await comm.disconnect()


@FAST
async def test_the_format_cannot_change_once_audio_was_sent(api):
    comm, _ = await open_socket(create_session(api))
    await append(comm, b"\x00\x00" * 2400)
    await comm.send_json_to(
        {"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}
    )
    assert_openai_error(
        await comm.receive_json_from(timeout=5), "invalid_value", "session.input_audio_format"
    )
    await comm.disconnect()


# malformed events -----------------------------------------------------------------------------
BAD_EVENTS = [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_type", None),
    ('{"type": "response.create"}', "invalid_value", "type"),
    ('{"no": "type"}', "invalid_value", "type"),
    ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
    ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
    ('{"type": "session.update"}', "missing_required_parameter", "session"),
    (
        '{"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}}',
        "invalid_value",
        "session.input_audio_format",
    ),
    (
        '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
        '{"turn_detection": {"type": "server_vad", "prefix_padding_ms": -5}}}}}',
        "invalid_value",
        "session.audio.input.turn_detection.prefix_padding_ms",
    ),
    (
        '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
        '{"format": {"type": "audio/pcm", "rate": 16000}}}}}',
        "invalid_value",
        "session.audio.input.format",
    ),
]


@pytest.mark.parametrize(("frame", "code", "param"), BAD_EVENTS)
async def test_a_malformed_event_gets_an_openai_error_and_the_socket_stays_open(
    api, frame, code, param
):
    comm, _ = await open_socket(create_session(api))
    await comm.send_to(text_data=frame)
    assert_openai_error(await comm.receive_json_from(timeout=5), code, param)
    await comm.send_json_to({"type": "transcription_session.update", "session": {}})
    assert (await comm.receive_json_from(timeout=5))["type"] == "transcription_session.updated"
    await comm.disconnect()


async def test_an_error_names_the_client_event_that_caused_it(api):
    comm, _ = await open_socket(create_session(api))
    await comm.send_json_to({"type": "input_audio_buffer.append", "event_id": "evt_42"})
    error = await comm.receive_json_from(timeout=5)
    assert error["error"]["event_id"] == "evt_42"
    assert error["event_id"] != "evt_42"  # the server's own id
    await comm.disconnect()


async def test_binary_frames_are_an_error_not_audio(api):
    comm, _ = await open_socket(create_session(api))
    await comm.send_to(bytes_data=b"\x00\x01" * 160)
    assert_openai_error(await comm.receive_json_from(timeout=5), "binary_not_supported")
    await comm.disconnect()


async def test_a_commit_with_nothing_to_commit_is_an_error(api):
    comm, _ = await open_socket(create_session(api))
    await comm.send_json_to({"type": "input_audio_buffer.commit"})
    assert_openai_error(await comm.receive_json_from(timeout=5), "input_audio_buffer_commit_empty")
    await comm.disconnect()


# speech ---------------------------------------------------------------------------------------
@FAST
async def test_speech_gives_vad_events_a_commit_and_the_transcript_of_one_item(backend, api):
    session = hold(api, create_session(api, intents=False))
    comm, _ = await open_socket(session)
    await append(comm, pcm24("remind_buy_milk_tomorrow"))
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    kinds = [e["type"] for e in events]
    assert kinds[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    item_id = events[0]["item_id"]
    assert all(e["item_id"] == item_id for e in events if "item_id" in e)
    assert events[2]["previous_item_id"] is None
    completed = events[-1]
    assert completed["transcript"] == "remind me to buy milk tomorrow"
    assert completed["content_index"] == 0
    assert completed["usage"]["type"] == "duration" and completed["usage"]["seconds"] > 1
    deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
    assert "".join(deltas) == completed["transcript"]
    # Positions in the audio (sent faster than real time: not when the events were sent):
    # 200 ms of silence, the WAV's 3.67 s (speech in it from about 0.3 s), 1.2 s of silence.
    assert 0 <= events[0]["audio_start_ms"] < 1000
    assert 3000 < events[1]["audio_end_ms"] <= 200 + 3669 + 1200
    assert 2 < completed["usage"]["seconds"] < 5
    # transcription only: no task was made of it
    assert (await aget(api, f"/api/v1/sessions/{session['id']}/tasks")).json() == []
    await comm.disconnect()


@FAST
async def test_a_session_with_intents_still_makes_its_tasks(api):
    session = hold(api, create_session(api))
    comm, _ = await open_socket(session)
    await append(comm, pcm24("add_milk_to_my_list"))
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    assert events[-1]["transcript"] == "add milk to my list"
    for _ in range(50):
        tasks = (await aget(api, f"/api/v1/sessions/{session['id']}/tasks")).json()
        if tasks:
            break
        await asyncio.sleep(0.1)
    assert [t["type"] for t in tasks] == ["todo"]
    await comm.disconnect()


@FAST
async def test_a_commit_ends_the_utterance_without_waiting_for_silence(api):
    comm, _ = await open_socket(create_session(api, intents=False))
    await append(comm, pcm24("add_milk_to_my_list", silence_after=0))
    await until(comm, "input_audio_buffer.speech_started")
    await comm.send_json_to({"type": "input_audio_buffer.commit"})
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.committed" in kinds
    # committed by the client: OpenAI sends no speech_stopped for it
    assert "input_audio_buffer.speech_stopped" not in kinds
    assert events[-1]["transcript"] == "add milk to my list"
    await comm.disconnect()


@FAST
async def test_clear_drops_the_speech_not_yet_committed(backend, api):
    comm, _ = await open_socket(create_session(api, intents=False))
    await append(comm, pcm24("add_milk_to_my_list", silence_after=0))
    started = (await until(comm, "input_audio_buffer.speech_started"))[-1]
    await comm.send_json_to({"type": "input_audio_buffer.clear"})
    await until(comm, "input_audio_buffer.cleared")
    # the next utterance is the next item; the cleared one never gets a transcript
    await append(comm, pcm24("confirm"))
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    assert events[-1]["transcript"] == "confirm"
    assert events[-1]["item_id"] != started["item_id"]
    assert all(e.get("item_id") != started["item_id"] for e in events)
    await comm.disconnect()


async def update_turns(comm, turn_detection) -> dict:
    await comm.send_json_to(
        {"type": "transcription_session.update", "session": {"turn_detection": turn_detection}}
    )
    updated = (await until(comm, "transcription_session.updated"))[-1]
    return updated["session"]["turn_detection"]


@FAST
async def test_with_turn_detection_off_only_a_commit_ends_the_utterance(api):
    comm, _ = await open_socket(create_session(api, intents=False))
    assert await update_turns(comm, None) is None
    await append(comm, pcm24("add_milk_to_my_list", silence_after=1.5))
    await comm.send_json_to({"type": "input_audio_buffer.commit"})
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    kinds = [e["type"] for e in events]
    # OpenAI's manual mode: no VAD events; the commit (not 2.5 s of silence) made the item
    assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.added"]
    assert "error" not in kinds
    assert events[-1]["transcript"] == "add milk to my list"
    await comm.disconnect()


@FAST
async def test_server_vad_ends_the_turn_after_silence_duration_ms_of_silence(api):
    """The same audio and commit as above: with 500 ms the silence ended the turn before the
    commit (which then has nothing to commit); with 3000 ms it had not."""
    for silence_ms, commit_finds_speech in ((500, False), (3000, True)):
        comm, _ = await open_socket(create_session(api, intents=False))
        applied = await update_turns(
            comm, {"type": "server_vad", "silence_duration_ms": silence_ms}
        )
        assert applied["silence_duration_ms"] == silence_ms
        await append(comm, pcm24("add_milk_to_my_list", silence_after=1.5))
        await comm.send_json_to({"type": "input_audio_buffer.commit"})
        events = await until(comm, "conversation.item.input_audio_transcription.completed")
        errors = [e["error"]["code"] for e in events if e["type"] == "error"]
        kinds = [e["type"] for e in events]
        assert ("input_audio_buffer.speech_stopped" in kinds) is not commit_finds_speech
        assert errors == ([] if commit_finds_speech else ["input_audio_buffer_commit_empty"])
        assert events[-1]["transcript"] == "add milk to my list"
        await comm.disconnect()


async def test_server_vad_settings_are_echoed_as_applied(api):
    comm, _ = await open_socket(create_session(api))
    applied = await update_turns(
        comm,
        {"type": "server_vad", "prefix_padding_ms": 150, "threshold": 0.8, "create_response": 1},
    )
    assert applied == {
        "type": "server_vad",
        "threshold": 0.8,
        "prefix_padding_ms": 150,
        "silence_duration_ms": 500,
    }
    # semantic VAD is served as server VAD with OpenAI's default timings
    applied = await update_turns(comm, {"type": "semantic_vad", "eagerness": "high"})
    assert applied["type"] == "server_vad" and applied["silence_duration_ms"] == 500
    await comm.send_json_to(
        {"type": "transcription_session.update", "session": {"turn_detection": {"type": "x"}}}
    )
    assert_openai_error(
        await comm.receive_json_from(timeout=5), "invalid_value", "session.turn_detection.type"
    )
    await comm.send_json_to(
        {
            "type": "transcription_session.update",
            "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 1.5}},
        }
    )
    assert_openai_error(
        await comm.receive_json_from(timeout=5),
        "invalid_value",
        "session.turn_detection.silence_duration_ms",
    )
    await comm.disconnect()


def alaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 A-law by nearest table entry (the inverse of the decode table)."""
    order = np.argsort(ALAW_TO_PCM)
    table = ALAW_TO_PCM[order].astype(np.int32)
    idx = np.clip(np.searchsorted(table, pcm), 1, 255)
    nearer = np.where(np.abs(table[idx - 1] - pcm) <= np.abs(table[idx] - pcm), idx - 1, idx)
    return order[nearer].astype(np.uint8).tobytes()


def test_a_law_decoding_matches_the_g711_table():
    # ITU-T G.711 A-law: 0xD5 and 0x55 are the smallest steps (+8, -8), 0xAA and 0x2A the
    # largest (+32256, -32256); even bits are inverted on the wire.
    assert [int(ALAW_TO_PCM[c]) for c in (0xD5, 0x55, 0xAA, 0x2A)] == [8, -8, 32256, -32256]
    assert [int(ALAW_TO_PCM[c]) for c in (0xD4, 0xD7, 0xC5)] == [24, 40, 264]
    assert len(set(ALAW_TO_PCM.tolist())) == 256


@FAST
async def test_g711_alaw_at_8_khz_is_decoded_and_recognized(api):
    comm, _ = await open_socket(create_session(api, intents=False))
    await comm.send_json_to(
        {"type": "transcription_session.update", "session": {"input_audio_format": "g711_alaw"}}
    )
    await until(comm, "transcription_session.updated")
    with wave.open(str(AUDIO / "remind_buy_milk_tomorrow.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    narrow = soxr.resample(pcm, 16000, 8000).astype(np.int32)
    audio = alaw_encode(np.concatenate([narrow, np.zeros(8000 * 2, dtype=np.int32)]))
    await append(comm, audio, chunk=1600)
    events = await until(comm, "conversation.item.input_audio_transcription.completed")
    assert events[-1]["transcript"] == "remind me to buy milk tomorrow"
    await comm.disconnect()


# deltas ---------------------------------------------------------------------------------------
def test_deltas_send_only_words_two_hypotheses_agree_on():
    assert stable_text("", "remind me") == ""
    assert stable_text("remind me", "remind me to") == "remind me"
    assert stable_text("remind me to", "remind me to buy") == "remind me to"
    assert stable_text("remind my", "remind me to") == "remind"


def test_deltas_add_up_to_the_final_transcript_when_nothing_is_revised():
    hypotheses = ["remind", "remind me", "remind me to", "remind me to buy", "remind me to buy"]
    sent, previous = "", ""
    for hypothesis in hypotheses:
        sent += delta_for(sent, stable_text(previous, hypothesis))
        previous = hypothesis
    assert sent == "remind me to"
    sent += delta_for(sent, "remind me to buy milk")
    assert sent == "remind me to buy milk"


def test_a_revised_word_stops_the_deltas_rather_than_sending_a_wrong_one():
    assert delta_for("remind", "reminded me") == ""
    assert delta_for("remind me", "remind my list") == ""
    assert delta_for("remind me", "remind me") == ""


# the intents setting at create ----------------------------------------------------------------
def test_a_session_is_created_with_intents_on_unless_asked_otherwise(api):
    assert create_session(api)["intents"] is True
    assert create_session(api, intents=False)["intents"] is False


@pytest.mark.parametrize("value", ["false", 0, None, "no"])
def test_intents_must_be_a_json_boolean(api, value):
    body = {"namespace_id": "user-1", "key_hash": "sha256:" + "ab" * 32, "intents": value}
    response = api.post("/api/v1/sessions", body, format="json")
    assert response.status_code == 400
    assert "intents" in response.json()
