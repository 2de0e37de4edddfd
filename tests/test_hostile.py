"""Hostile cases (issue 9): slots past the window, racing tokens, replay content, frame edges.

Each test here fails if the behaviour it names breaks; they run on local memory and on Redis
where the back end matters.
"""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from core import clock
from sessions_app import store
from tasks_app import scheduler
from tasks_app import selectors as task_selectors
from tests.conftest import (
    KEY_HASH,
    bearer,
    close_code,
    connect,
    create_session,
    receive_until,
    ws_path,
)
from voiceproject.asgi import application

pytestmark = pytest.mark.django_db(databases=[])


async def _get(api, path: str, session: dict):
    return await sync_to_async(api.get, thread_sensitive=False)(path, **bearer(session))


async def _post(api, path: str, session: dict, body=None):
    return await sync_to_async(api.post, thread_sensitive=False)(
        path, body, format="json", **bearer(session)
    )


async def _create(api, namespace_id: str):
    return await sync_to_async(api.post, thread_sensitive=False)(
        "/api/v1/sessions", {"namespace_id": namespace_id, "key_hash": KEY_HASH}, format="json"
    )


# limits and tokens -----------------------------------------------------------------------------
async def test_a_connected_session_keeps_its_slot_past_the_connect_window(backend, api):
    """Five sessions connect (two then hang up); past the window the sixth is still a 429.

    Only a session *never* connected within the window is abandoned (CONTRACT section 1); one
    that connected holds its slot until the end of its life, socket or no socket.
    """
    assert settings.MAX_SESSIONS_PER_USER == 5
    sessions = [create_session(api, namespace_id="held") for _ in range(5)]
    sockets = [(await connect(s))[0] for s in sessions]
    for comm in sockets[:2]:
        await comm.disconnect()
    clock.advance(settings.CONNECT_WINDOW_SECONDS + 5)

    response = await _create(api, "held")
    assert response.status_code == 429, response.content
    assert response.json() == {"detail": "Maximum 5 concurrent sessions allowed"}
    for session in sessions:  # and none of the five was closed for it
        body = (await _get(api, f"/api/v1/sessions/{session['id']}", session)).json()
        assert body["status"] in ("created", "connected"), body
    for comm in sockets[2:]:
        await comm.disconnect()


async def test_two_sockets_racing_with_one_connect_token_exactly_one_wins(backend, api):
    """The same connect token on two sockets at once: one ``session.ready``, one 4401."""
    for _ in range(3):  # a race can be lucky once; three times in a row it is the code
        session = create_session(api, namespace_id="racer")
        path = ws_path(session)
        comms = [WebsocketCommunicator(application, path) for _ in range(2)]
        await asyncio.gather(*(c.connect() for c in comms))
        first = await asyncio.gather(*(c.receive_json_from(timeout=5) for c in comms))
        kinds = sorted(e["type"] for e in first)
        assert kinds == ["error", "session.ready"], first
        loser = comms[[e["type"] for e in first].index("error")]
        winner = comms[[e["type"] for e in first].index("session.ready")]
        assert first[comms.index(loser)]["close_code"] == 4401
        assert await close_code(loser) == 4401
        await winner.send_json_to({"type": "ping"})
        assert (await winner.receive_json_from(timeout=5))["type"] == "pong"
        await winner.disconnect()
        await loser.wait()


async def test_what_happened_while_the_client_was_away_is_replayed_with_its_content(backend, api):
    """Events made with no socket attached come back on resume whole, not only their seqs.

    While away: the draft reminder is confirmed over REST (``task.updated`` as it moves to
    queued), and when it falls due the scheduler runs it (running, completed) and announces
    it, a ``response`` with its text: a reminder fires with no socket attached.
    """
    session = create_session(api, namespace_id="away")
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": "remind me to buy milk in 5 minutes"})
    seen = await receive_until(comm, "response")
    draft = next(e for e in seen if e["type"] == "task.created")["task"]
    assert (draft["type"], draft["state"]) == ("reminder", "draft")
    last_seen = seen[-1]["seq"]
    await comm.disconnect()

    confirmed = await _post(api, f"/api/v1/tasks/{draft['id']}/confirm", session)
    assert confirmed.status_code == 200, confirmed.content
    assert task_selectors.task_get(task_id=draft["id"])["state"] == "queued"
    clock.advance(5 * 60 + 1)
    assert await sync_to_async(scheduler.run_due, thread_sensitive=False)() == 1  # any worker's
    deadline = time.monotonic() + 5
    while task_selectors.task_get(task_id=draft["id"])["state"] != "completed":
        assert time.monotonic() < deadline, "the due reminder never ran"
        await asyncio.sleep(0.02)
    rest_task = (await _get(api, f"/api/v1/tasks/{draft['id']}", session)).json()

    fresh = (await _get(api, f"/api/v1/sessions/{session['id']}", session)).json()
    comm, _ = await connect(fresh)
    await comm.send_json_to({"type": "session.resume", "last_seq": last_seen})
    replayed = await receive_until(comm, "response")
    await comm.disconnect()

    assert all(e["seq"] > last_seen for e in replayed)
    updates = [e for e in replayed if e["type"] == "task.updated"]
    assert [e["task"]["state"] for e in updates] == ["queued", "running", "completed"]
    for event in updates:
        task = event["task"]
        assert set(task) == set(rest_task), task
        for field in ("id", "session_id", "type", "created_at"):
            assert task[field] == rest_task[field], field
    assert updates[-1]["task"] == rest_task
    reply = replayed[-1]
    assert reply["type"] == "response"
    assert reply["text"] == "Reminder: buy milk"
    assert reply["task_id"] == draft["id"]


# frames ---------------------------------------------------------------------------------------
def _text_frame_of(size: int) -> str:
    """A ``ping`` padded to exactly ``size`` bytes of UTF-8."""
    bare = json.dumps({"type": "ping", "pad": ""})
    frame = json.dumps({"type": "ping", "pad": "x" * (size - len(bare))})
    assert len(frame.encode()) == size
    return frame


@pytest.mark.parametrize("limit", [None, 4096])
@pytest.mark.parametrize("kind", ["audio", "text"])
async def test_a_frame_of_exactly_max_frame_bytes_is_taken_and_one_byte_more_is_4413(
    api, kind, limit
):
    overrides = {} if limit is None else {"MAX_FRAME_BYTES": limit}
    with override_settings(**overrides):
        size = settings.MAX_FRAME_BYTES
        assert size == (limit or 65536)

        def frame(n: int) -> dict:
            return (
                {"bytes_data": b"\x00" * n} if kind == "audio" else {"text_data": _text_frame_of(n)}
            )

        session = create_session(api)
        comm, _ = await connect(session)
        await comm.send_to(**frame(size))
        await comm.send_json_to({"type": "ping"})
        events = await receive_until(comm, "pong")
        assert not any(e["type"] == "error" for e in events), events
        if kind == "audio":
            assert await _frames_received(session["id"]) == 1
        await comm.send_to(**frame(size + 1))
        assert await close_code(comm) == 4413
        await comm.wait()


async def _frames_received(session_id: str) -> int:
    """Audio frames the session counted (flushed to the store once per socket tick)."""
    deadline = time.monotonic() + 3
    while True:
        record = store.session_get(session_id=session_id)
        count = int(record["audio_chunks_received"])
        if count or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_a_text_frame_over_the_limit_in_bytes_but_not_in_characters_is_4413(api):
    with override_settings(MAX_FRAME_BYTES=4096):
        comm, _ = await connect(create_session(api))
        pad = "é" * 2100  # 2100 characters, 4200 bytes
        await comm.send_to(text_data=json.dumps({"type": "ping", "pad": pad}, ensure_ascii=False))
        assert await close_code(comm, timeout=2) == 4413
