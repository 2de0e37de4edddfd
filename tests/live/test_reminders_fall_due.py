"""A reminder falls due with nobody connected, once, on a real fleet (CONTRACT 2a, issue 12).

Two web workers (each runs the scheduler) and a task ``runworker`` on one Redis, on the
production defaults otherwise: the reminder is set over the socket, the socket goes away, and
when the time comes the task completes; the client sees it over REST and on resume, said
exactly once although two schedulers looked.
"""

import asyncio
import json
import time

import pytest
import redis
import websockets

from tests.conftest import redis_or_skip
from tests.live.servers import until, uvicorn

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]


async def test_a_reminder_falls_due_with_no_socket_and_is_said_once_on_resume(tmp_path):
    from tests.live.servers import runworker

    url = redis_or_skip()
    redis.Redis.from_url(url).flushdb()
    env = {"REDIS_URL": url, "CACHE_KEY_PREFIX": "vs-due"}
    with (
        uvicorn(tmp_path, "a", **env) as a,
        uvicorn(tmp_path, "b", **env) as b,
        runworker(tmp_path, **env),
    ):
        session = a.create_session("due-user")
        async with websockets.connect(a.ws_url(session)) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "text", "text": "remind me to stretch in 4 seconds"}))
            said = await until(ws, lambda e: e["type"] == "response")
            task = next(e for e in said if e["type"] == "task.created")["task"]
            await ws.send(json.dumps({"type": "text", "text": "confirm"}))
            confirmed = await until(ws, lambda e: e["type"] == "response")
            last_seq = confirmed[-1]["seq"]
        assert task["type"] == "reminder"

        token = session["session_token"]
        deadline = time.monotonic() + 30
        while True:  # nobody is connected now
            status, body = b.request("GET", f"/api/v1/tasks/{task['id']}", token=token)
            assert status == 200
            if body["state"] == "completed":
                break
            assert time.monotonic() < deadline, f"the reminder never fell due: {body['state']}"
            await asyncio.sleep(0.5)
        status, result = b.request("GET", f"/api/v1/tasks/{task['id']}/result", token=token)
        assert status == 200 and result["text"] == "stretch" and result["timezone"] == "UTC"

        _, fresh = b.request("GET", f"/api/v1/sessions/{session['id']}", token=token)
        async with websockets.connect(b.ws_url(fresh)) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "session.resume", "last_seq": last_seq}))
            await ws.send(json.dumps({"type": "ping"}))
            replayed = await until(ws, lambda e: e["type"] == "pong")
        reminders = [e for e in replayed if e["type"] == "response"]
        assert [(e["text"], e["task_id"]) for e in reminders] == [("Reminder: stretch", task["id"])]
    redis.Redis.from_url(url).flushdb()
