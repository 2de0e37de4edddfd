"""Per-socket limits on messages, and events that are never lost in embedded mode (issue 10).

Typed utterances and control messages share a token bucket per socket
(``SOCKET_MESSAGE_RATE`` a second after a burst of ``SOCKET_MESSAGE_BURST``): past it a
message is dropped with one ``rate_limited`` error, and a client that goes on for another
burst is closed with 4429. The in-memory channel layer queues ``CHANNEL_CAPACITY`` messages a
socket; past that the client hears ``events_lost`` and resumes, never a silent gap.
"""

import asyncio
import base64
import json

import pytest
from channels.layers import channel_layers
from django.test import override_settings

from tests.conftest import connect, create_session

pytestmark = pytest.mark.django_db(databases=[])

SILENCE_20MS = b"\x00\x00" * 320


async def drain(comm, quiet: float = 1.0, limit: float = 30.0) -> list[dict]:
    """Every event until the socket has been quiet for ``quiet`` seconds."""
    events = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if await comm.receive_nothing(timeout=quiet):
            return events
        events.append(await comm.receive_json_from())
    return events


# the message rate --------------------------------------------------------------------------------
@override_settings(SOCKET_MESSAGE_RATE=5, SOCKET_MESSAGE_BURST=5)
async def test_messages_past_the_burst_are_dropped_with_one_rate_limited_error(backend, api):
    comm, _ = await connect(create_session(api))
    for _ in range(8):
        await comm.send_json_to({"type": "ping"})
    events = await drain(comm, quiet=0.3)
    assert [e["type"] for e in events] == ["pong"] * 5 + ["error"]
    assert events[-1]["code"] == "rate_limited" and "close_code" not in events[-1]
    assert events[-1]["retry_after_ms"] > 0
    await asyncio.sleep(events[-1]["retry_after_ms"] / 1000 + 0.25)
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong", "served again"
    await comm.disconnect()


@override_settings(SOCKET_MESSAGE_RATE=5, SOCKET_MESSAGE_BURST=5)
async def test_a_client_that_keeps_sending_past_the_message_rate_is_closed_with_4429(api):
    comm, _ = await connect(create_session(api))
    said = []
    for _ in range(20):  # 5 allowed, then more than a burst (5) dropped in a row
        await comm.send_json_to({"type": "text", "text": "what is on my list"})
    while True:
        out = await comm.receive_output(timeout=10)
        if out["type"] == "websocket.close":
            break
        said.append(json.loads(out["text"]))
    assert out["code"] == 4429
    assert said[-1]["close_code"] == 4429 and said[-1]["code"] == "too_fast"
    assert said[-1]["message"] == "messages faster than the socket's message rate"
    # Events still queued for this socket when it closes are in the replay buffer, not here.
    assert sum(e["type"] == "response" for e in said) <= 5


@override_settings(SOCKET_MESSAGE_RATE=1, SOCKET_MESSAGE_BURST=1)
async def test_audio_in_json_is_limited_by_the_audio_rate_not_the_message_rate(api):
    comm, _ = await connect(create_session(api))
    data = base64.b64encode(SILENCE_20MS).decode()
    for _ in range(50):  # one second of audio, in 50 messages
        await comm.send_json_to({"type": "audio", "data": data})
    await comm.send_json_to({"type": "ping"})
    assert [e["type"] for e in await drain(comm, quiet=0.3)] == ["pong"]
    await comm.disconnect()


async def test_a_flood_of_bad_audio_messages_meets_the_error_budget(api):
    """A known type no longer resets the run of errors by itself: only a good message does."""
    comm, _ = await connect(create_session(api))
    with override_settings(PROTOCOL_ERROR_BUDGET=3, SOCKET_MESSAGE_BURST=100):
        for _ in range(5):
            await comm.send_json_to({"type": "audio", "data": "***"})
        said = []
        while True:
            out = await comm.receive_output(timeout=5)
            if out["type"] == "websocket.close":
                break
            said.append(json.loads(out["text"]))
    assert out["code"] == 4400
    assert said[-1]["code"] == "protocol_violation"


# nothing is lost in embedded mode ----------------------------------------------------------------
@override_settings(SOCKET_MESSAGE_RATE=0)  # the burst, past the default message rate
async def test_a_burst_of_50_typed_utterances_delivers_every_event_on_local_memory(api):
    comm, ready = await connect(create_session(api))
    for i in range(50):
        await comm.send_json_to({"type": "text", "text": f"take a note number {i}"})
    events = await drain(comm, quiet=1.5, limit=60)
    assert not [e for e in events if e["type"] == "error"], events[:3]
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(ready["seq"] + 1, ready["seq"] + 1 + len(seqs))), "a gap"
    assert sum(e["type"] == "response" for e in events) == 50
    assert sum(e["type"] == "task.created" for e in events) == 50
    completed = [e for e in events if e["type"] == "task.updated"]
    assert sum(e["task"]["state"] == "completed" for e in completed) == 50
    assert len(events) == 200
    await comm.disconnect()


async def test_a_full_socket_queue_is_reported_as_events_lost_and_resume_fills_the_gap(api):
    small = {
        "default": {
            "BACKEND": "core.layer.InMemoryChannelLayer",
            "CONFIG": {"capacity": 4},
        },
        "tasks": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    with override_settings(CHANNEL_LAYERS=small, SOCKET_MESSAGE_RATE=0):
        channel_layers.backends.clear()
        comm, ready = await connect(create_session(api))
        for i in range(10):
            await comm.send_json_to({"type": "text", "text": f"take a note number {i}"})
        events = await drain(comm, quiet=1.5)
        lost = [e for e in events if e["type"] == "error"]
        assert lost and lost[0]["code"] == "events_lost" and "close_code" not in lost[0]
        seen = {e["seq"] for e in events}
        first_gap = min(s for s in range(ready["seq"] + 1, max(seen)) if s not in seen)
        await comm.send_json_to({"type": "session.resume", "last_seq": first_gap - 1})
        seen |= {e["seq"] for e in await drain(comm, quiet=1.0)}
        assert set(range(ready["seq"] + 1, max(seen) + 1)) <= seen, "every seq, after resume"
        await comm.disconnect()
    channel_layers.backends.clear()
