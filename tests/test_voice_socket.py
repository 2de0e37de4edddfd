"""``/ws/voice`` through the real ASGI application (CONTRACT section 2)."""

import asyncio
import base64
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from core import clock
from sessions_app.tokens import token_issue
from tests.conftest import (
    adelete,
    aget,
    close_code,
    connect,
    create_session,
    hold,
    receive_until,
    ws_path,
)
from voiceproject.asgi import application

pytestmark = pytest.mark.django_db(databases=[])

SILENCE_20MS = b"\x00\x00" * 320


async def _refused_with(path: str, headers=None) -> int:
    comm = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await comm.connect()
    assert connected, "refusals other than Origin are accepted, then closed with a code"
    said = json.loads((await comm.receive_output(timeout=5))["text"])
    assert (said["type"], said["seq"]) == ("error", 0), said
    out = await comm.receive_output(timeout=5)
    assert out["type"] == "websocket.close"
    assert said["close_code"] == out["code"]
    await comm.wait()
    return out["code"]


async def test_connect_greets_with_session_ready(backend, api):
    session = hold(api, create_session(api))
    comm, ready = await connect(session)
    assert ready["seq"] == 1
    assert ready["audio"] == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
    assert ready["limits"]["max_frame_bytes"] == 65536
    status = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()["status"]
    assert status == "connected"
    await comm.disconnect()


async def test_a_socket_without_a_token_is_closed_with_4401(api):
    session = hold(api, create_session(api))
    assert await _refused_with(f"/ws/voice?session_id={session['id']}") == 4401


async def test_a_forged_token_is_closed_with_4401(api):
    session = hold(api, create_session(api))
    token = token_issue(session_id=session["id"])
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert await _refused_with(f"/ws/voice?session_id={session['id']}&token={forged}") == 4401


async def test_a_token_for_another_session_is_closed_with_4401(api):
    one, two = create_session(api), create_session(api)
    token = token_issue(session_id=two["id"])
    assert await _refused_with(f"/ws/voice?session_id={one['id']}&token={token}") == 4401


async def test_a_replayed_token_is_closed_with_4401(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.disconnect()
    assert await _refused_with(ws_path(session)) == 4401


async def test_an_expired_token_is_closed_with_4401(api):
    with override_settings(CONNECT_WINDOW_SECONDS=1):
        session = hold(api, create_session(api))
        await asyncio.sleep(2.1)
        assert await _refused_with(ws_path(session)) == 4401


async def test_an_unknown_or_deleted_session_is_closed_with_4404(api):
    session = hold(api, create_session(api))
    await adelete(api, f"/api/v1/sessions/{session['id']}")
    assert await _refused_with(ws_path(session)) == 4404
    assert await _refused_with("/ws/voice?session_id=not-a-uuid&token=x") == 4404


async def test_second_socket_takes_over_and_the_first_gets_4409(backend, api):
    session = hold(api, create_session(api))
    first, _ = await connect(session)
    fresh = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()
    second, ready = await connect(fresh)
    assert await close_code(first) == 4409
    await second.send_json_to({"type": "ping"})
    pong = await second.receive_json_from(timeout=5)
    assert pong["type"] == "pong" and pong["seq"] > ready["seq"]
    status = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()["status"]
    assert status == "connected", "the replaced socket must not overwrite the new one's status"
    await second.disconnect()


async def test_ping_is_answered_with_pong_and_seq_increases(api):
    comm, ready = await connect(create_session(api))
    seqs = [ready["seq"]]
    for _ in range(3):
        await comm.send_json_to({"type": "ping"})
        pong = await comm.receive_json_from(timeout=5)
        assert pong["type"] == "pong"
        seqs.append(pong["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "unknown_type"),
        ('"ping"', "unknown_type"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": 7}', "unknown_type"),
        ('{"no": "type"}', "unknown_type"),
        ('{"type": "text", "text": 5}', "bad_text"),
        ('{"type": "text", "text": ""}', "bad_text"),
        ('{"type": "audio", "data": "***"}', "bad_audio"),
        ('{"type": "audio", "data": 12}', "bad_audio"),
        ('{"type": "session.update", "audio": {"encoding": "flac"}}', "bad_audio_format"),
        ('{"type": "session.update", "audio": {"sample_rate": 44100}}', "bad_audio_format"),
        ('{"type": "session.update", "audio": "x"}', "bad_message"),
        ('{"type": "session.resume", "last_seq": -1}', "bad_message"),
        ('{"type": "session.resume", "last_seq": "3"}', "bad_message"),
        ('{"type": "session.resume", "last_seq": true}', "bad_message"),
        ('{"type": "audio.commit"}', "empty_commit"),
    ],
)
async def test_bad_messages_get_an_error_event_and_the_socket_stays_open(api, frame, code):
    comm, _ = await connect(create_session(api))
    await comm.send_to(text_data=frame)
    error = await comm.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == code
    assert "Traceback" not in error["message"]
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    await comm.disconnect()


async def test_a_long_run_of_protocol_errors_closes_with_4400(api):
    comm, _ = await connect(create_session(api))
    with override_settings(PROTOCOL_ERROR_BUDGET=3):
        for _ in range(4):
            await comm.send_to(text_data="nope")
        assert await close_code(comm) == 4400


@pytest.mark.parametrize("kind", ["bytes", "text"])
async def test_a_frame_over_max_frame_bytes_closes_with_4413(api, kind):
    comm, _ = await connect(create_session(api))
    if kind == "bytes":
        await comm.send_to(bytes_data=b"\x00" * 65538)
    else:
        await comm.send_to(text_data=json.dumps({"type": "text", "text": "a" * 70000}))
    assert await close_code(comm) == 4413


async def test_audio_frames_are_counted_in_stats_within_a_second(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    for _ in range(10):
        await comm.send_to(bytes_data=SILENCE_20MS)
    for _ in range(5):
        data = base64.b64encode(SILENCE_20MS).decode()
        await comm.send_json_to({"type": "audio", "data": data})
    await asyncio.sleep(1.0)
    stats = (await aget(api, f"/api/v1/sessions/{session['id']}/stats")).json()
    assert stats["audio_chunks_received"] == 15
    assert stats["audio_chunks_processed"] == 15
    await comm.disconnect()


async def test_a_pcm16_frame_with_an_odd_byte_count_is_an_error_not_a_crash(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_to(bytes_data=b"\x00" * 641)
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "bad_audio")
    await comm.send_to(bytes_data=SILENCE_20MS)
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    await comm.disconnect()


async def test_audio_sustained_faster_than_twice_real_time_closes_with_4429(api):
    comm, _ = await connect(create_session(api))
    with override_settings(AUDIO_RATE_BURST_SECONDS=0.5):
        comm2, _ = await connect(create_session(api))
        for _ in range(200):  # 4 s of audio at once
            await comm2.send_to(bytes_data=SILENCE_20MS)
        assert await close_code(comm2) == 4429
    await comm.disconnect()


async def test_session_update_changes_the_format_before_audio_only(api):
    comm, _ = await connect(create_session(api))
    await comm.send_json_to(
        {"type": "session.update", "audio": {"encoding": "mulaw", "sample_rate": 8000}}
    )
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready"
    assert ready["audio"]["encoding"] == "mulaw" and ready["audio"]["sample_rate"] == 8000
    await comm.send_to(bytes_data=b"\xff" * 160)
    await comm.send_json_to(
        {"type": "session.update", "audio": {"encoding": "pcm_s16le", "sample_rate": 16000}}
    )
    error = await comm.receive_json_from(timeout=5)
    assert error["code"] == "audio_already_started"
    await comm.disconnect()


async def test_session_close_from_the_client_closes_with_1000_and_deletes(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "session.close"})
    closed = await comm.receive_json_from(timeout=5)
    assert closed["type"] == "session.closed" and closed["reason"] == "client"
    assert await close_code(comm) == 1000
    assert (await aget(api, f"/api/v1/sessions/{session['id']}")).status_code == 404


async def test_delete_over_rest_closes_the_live_socket_with_1000(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    response = await adelete(api, f"/api/v1/sessions/{session['id']}")
    assert response.status_code == 200
    closed = await comm.receive_json_from(timeout=5)
    assert closed["type"] == "session.closed" and closed["reason"] == "deleted"
    assert await close_code(comm) == 1000


async def test_an_idle_socket_is_closed_with_4408(api):
    with override_settings(IDLE_TIMEOUT_SECONDS=0.3):
        comm, _ = await connect(create_session(api))
        assert await close_code(comm, timeout=5) == 4408


async def test_pings_keep_a_socket_from_idling_out(api):
    with override_settings(IDLE_TIMEOUT_SECONDS=0.5):
        comm, _ = await connect(create_session(api))
        for _ in range(6):
            await asyncio.sleep(0.2)
            await comm.send_json_to({"type": "ping"})
            assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
        await comm.disconnect()


async def test_at_the_end_of_its_life_the_session_closes_its_socket_with_1000(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    clock.advance(24 * 3600 + 1)
    closed = await comm.receive_json_from(timeout=5)
    assert closed == {"type": "session.closed", "reason": "expired", "seq": closed["seq"]}
    assert await close_code(comm) == 1000
    assert (await aget(api, f"/api/v1/sessions/{session['id']}")).status_code == 404


async def test_status_moves_from_created_to_connected_and_back_when_the_socket_goes(api):
    session = hold(api, create_session(api))
    url = f"/api/v1/sessions/{session['id']}"
    assert (await aget(api, url)).json()["status"] == "created"
    comm, _ = await connect(session)
    assert (await aget(api, url)).json()["status"] == "connected"
    await comm.disconnect()
    await asyncio.sleep(0.1)
    assert (await aget(api, url)).json()["status"] == "created"


async def test_resume_after_reconnect_replays_what_was_missed(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": "add eggs to my list"})
    events = await receive_until(comm, "response")
    last_seen = events[0]["seq"]
    await comm.disconnect()
    fresh = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()
    comm, _ = await connect(fresh)
    await comm.send_json_to({"type": "session.resume", "last_seq": last_seen})
    replayed = await receive_until(comm, "response")
    replayed_seqs = [e["seq"] for e in replayed]
    assert replayed_seqs == sorted(replayed_seqs)
    assert {e["type"] for e in replayed} >= {"response"}
    assert all(s > last_seen for s in replayed_seqs)
    missed = [e for e in events if e["seq"] > last_seen and e["type"] != "error"]
    assert [e["seq"] for e in missed] == [
        s for s in replayed_seqs if s in {m["seq"] for m in missed}
    ]
    await comm.disconnect()


async def test_resume_says_when_events_fell_out_of_the_buffer(api):
    with override_settings(EVENT_BUFFER_SIZE=2):
        session = hold(api, create_session(api))
        comm, _ = await connect(session)
        for text in ("add eggs to my list", "add milk to my list"):
            await comm.send_json_to({"type": "text", "text": text})
            await receive_until(comm, "response")
        await comm.send_json_to({"type": "session.resume", "last_seq": 0})
        error = await receive_until(comm, "error")
        assert error[-1]["code"] == "events_lost"
        await comm.disconnect()


async def test_a_foreign_or_null_origin_is_refused_at_the_handshake(api):
    session = hold(api, create_session(api))
    for origin in (b"http://evil.example", b"null"):
        comm = WebsocketCommunicator(application, ws_path(session), headers=[(b"origin", origin)])
        connected, _ = await comm.connect()
        assert connected is False, origin
        await comm.wait()


async def test_an_allowed_origin_and_a_missing_origin_both_connect(api):
    comm, _ = await connect(create_session(api), headers=[(b"origin", b"http://localhost")])
    await comm.disconnect()
    comm, _ = await connect(create_session(api))  # native clients send no Origin
    await comm.disconnect()


async def test_a_typed_utterance_reaches_intents_and_counts_as_messages(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": "take a note the code is 42"})
    events = await receive_until(comm, "response")
    created = next(e for e in events if e["type"] == "task.created")
    assert created["task"]["type"] == "note"
    assert events[-1]["text"] == "Noted."
    await asyncio.sleep(0.2)
    body = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()
    assert body["message_count"] == 2  # the user's utterance and the reply
    await comm.disconnect()


async def test_nothing_is_sent_to_a_socket_unprompted(api):
    comm, _ = await connect(create_session(api))
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()
