"""Redis stops under a running worker, then comes back: bounded errors, then recovery.

The test runs a Redis of its own (Debian's ``redis-server``, ``tests/own_redis.py``) on a free
port, so it can stop and restart it without touching the machine's shared one.
"""

import asyncio
import json
import time

import pytest
import websockets

from tests.live.servers import daphne
from tests.own_redis import free_port, require_redis_server, start_redis, stop_redis

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


async def test_rest_fails_closed_while_redis_is_down_and_recovers_after(tmp_path):
    require_redis_server()
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{port}/0", "TASK_RUNNER": "inprocess",
        "REDIS_SOCKET_TIMEOUT": "1",
    }  # fmt: skip
    try:
        with daphne(tmp_path, "w", **env) as srv:
            session = srv.create_session("before")
            ws = await websockets.connect(srv.ws_url(session))
            await ws.recv()

            redis_proc.terminate()
            redis_proc.wait(timeout=10)

            (status, body), took = await asyncio.to_thread(
                _timed, srv.request, "POST", "/api/v1/sessions",
                {"namespace_id": "during", "key_hash": "sha256:" + "0" * 64},
            )  # fmt: skip
            assert status == 503 and "unavailable" in body["detail"] and took < 5
            (status, _), took = await asyncio.to_thread(
                _timed, srv.request, "GET", f"/api/v1/sessions/{session['id']}",
                token=session["session_token"],
            )  # fmt: skip
            assert status == 503 and took < 5
            status, ready = await asyncio.to_thread(srv.request, "GET", "/readyz")
            assert status == 503 and set(ready["failing"]) == {"cache", "channel_layer"}

            # The socket is told, rather than left hanging: an error event, or 1011.
            outcome = None
            try:
                await ws.send(json.dumps({"type": "text", "text": "what is on my list"}))
                while outcome is None:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if event["type"] == "error":
                        outcome = event["code"]
            except websockets.ConnectionClosed as closed:
                outcome = closed.rcvd.code if closed.rcvd else 1006
            assert outcome in ("state_unavailable", "internal_error", 1011)

            redis_proc = start_redis(port, tmp_path)  # back, empty: nothing was persisted
            deadline = time.monotonic() + 15
            while True:
                status, body = await asyncio.to_thread(
                    srv.request, "POST", "/api/v1/sessions",
                    {"namespace_id": "after", "key_hash": "sha256:" + "0" * 64},
                )  # fmt: skip
                if status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert status == 200, body
            assert (await asyncio.to_thread(srv.request, "GET", "/readyz"))[0] == 200
            async with websockets.connect(srv.ws_url(body)) as ws2:
                assert json.loads(await ws2.recv())["type"] == "session.ready"
                await ws2.send(json.dumps({"type": "text", "text": "add tea to my list"}))
                while json.loads(await asyncio.wait_for(ws2.recv(), 10))["type"] != "response":
                    pass
    finally:
        stop_redis(redis_proc)
