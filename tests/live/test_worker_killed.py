"""A worker holding live sockets is SIGKILLed: clients move to another worker, lose nothing."""

import asyncio
import json
import signal
import time

import pytest
import redis
import websockets

from tests.conftest import redis_or_skip
from tests.live.servers import daphne, until

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]


async def test_clients_of_a_killed_worker_reconnect_elsewhere_and_resume(tmp_path):
    url = redis_or_skip()
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {
        "REDIS_URL": url, "TASK_RUNNER": "inprocess", "CACHE_KEY_PREFIX": "vs-kill",
        "SOCKET_ALIVE_SECONDS": "1",
    }  # fmt: skip
    with daphne(tmp_path, "b", **env) as b:
        with daphne(tmp_path, "a", **env) as a:
            session = a.create_session("killed")
            ws = await websockets.connect(a.ws_url(session))
            ready = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "text", "text": "take a note gate code 7"}))
            seen = await until(ws, lambda e: e["type"] == "response")
            task_id = next(e for e in seen if e["type"] == "task.created")["task"]["id"]
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            with pytest.raises(websockets.ConnectionClosed):
                while True:  # events already on the wire may arrive first
                    await asyncio.wait_for(ws.recv(), 10)

        # While no socket is attached, something happens to the session on worker B.
        status, _ = await asyncio.to_thread(
            b.request, "POST", f"/api/v1/tasks/{task_id}/cancel", token=session["session_token"]
        )
        assert status in (200, 409)  # 409 if the note had already completed

        time.sleep(3.5)  # three missed heartbeats: the dead socket no longer counts as attached
        status, fresh = await asyncio.to_thread(
            b.request, "GET", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
        )
        assert status == 200 and fresh["status"] == "created"

        async with websockets.connect(b.ws_url(fresh)) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "session.resume", "last_seq": ready["seq"]}))
            await ws.send(json.dumps({"type": "ping"}))
            replayed = await until(ws, lambda e: e["type"] == "pong")
        replayed_seqs = {e["seq"] for e in replayed}
        assert {e["seq"] for e in seen} <= replayed_seqs, "every event A sent is replayed"
        assert not any(e["type"] == "error" and e["code"] == "events_lost" for e in replayed)

        for key in client.keys("vs-kill*"):
            assert client.pttl(key) > 0, f"{key!r} has no TTL"
    client.flushdb()
