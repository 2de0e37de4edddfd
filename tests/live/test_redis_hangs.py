"""A Redis that hangs (SIGSTOP), not one that refuses: bounded answers, then recovery.

A stopped redis-server still accepts TCP connections (the kernel does), it just never answers,
so only the configured ``REDIS_SOCKET_TIMEOUT`` keeps a worker from waiting forever. The test
freezes a Redis of its own (``tests/own_redis.py``) under a real uvicorn worker on the
production defaults, checks that REST answers 503 and a live socket is closed with 1011 within
the timeout plus a generous margin, that every call returns, and that after SIGCONT new
sessions, sockets and the old session's state all work again.
"""

import asyncio
import json
import signal
import time

import pytest
import websockets

from tests.live.servers import KEY_HASH, uvicorn
from tests.own_redis import own_redis

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]

TIMEOUT = 1.0  # REDIS_SOCKET_TIMEOUT given to the worker
MARGIN = 3.0  # what a request may take beyond it (a few Redis calls, a thread hop, a loaded CI)


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


async def _socket_outcome(ws) -> tuple[str | int, float]:
    """What a live socket gets once it needs Redis: its close code, or an error event's code."""
    started = time.monotonic()
    try:
        await ws.send(json.dumps({"type": "text", "text": "what is on my list"}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if event["type"] == "error" and "close_code" not in event:
                return event["code"], time.monotonic() - started
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else 1006), time.monotonic() - started


async def test_a_frozen_redis_gives_bounded_503s_and_1011_and_everything_recovers(tmp_path):
    with own_redis(tmp_path) as (url, redis_proc):
        env = {
            "REDIS_URL": url, "TASK_RUNNER": "inprocess",
            "REDIS_SOCKET_TIMEOUT": str(TIMEOUT),
        }  # fmt: skip
        with uvicorn(tmp_path, "w", **env) as srv:
            before = srv.create_session("before")
            ws = await websockets.connect(srv.ws_url(before))
            assert json.loads(await ws.recv())["type"] == "session.ready"

            redis_proc.send_signal(signal.SIGSTOP)
            try:
                create = asyncio.to_thread(
                    _timed, srv.request, "POST", "/api/v1/sessions",
                    {"namespace_id": "during", "key_hash": KEY_HASH}, timeout=60,
                )  # fmt: skip
                get = asyncio.to_thread(
                    _timed, srv.request, "GET", f"/api/v1/sessions/{before['id']}",
                    token=before.get("session_token"), timeout=60,
                )  # fmt: skip
                ready = asyncio.to_thread(_timed, srv.request, "GET", "/readyz", timeout=60)
                results = await asyncio.wait_for(
                    asyncio.gather(create, get, ready, _socket_outcome(ws)), 90
                )
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            ((c_status, c_body), c_took), ((g_status, _), g_took), ((r_status, r_body), r_took) = (
                results[:3]
            )
            outcome, s_took = results[3]

            assert c_status == 503 and "unavailable" in c_body["detail"], c_body
            assert c_took < TIMEOUT + MARGIN, c_took
            assert g_status == 503 and g_took < TIMEOUT + MARGIN, (g_status, g_took)
            # /readyz waits up to 3 s for each probe (docs/operations.md)
            assert r_status == 503 and "cache" in r_body["failing"], r_body
            assert r_took < 3 + TIMEOUT + MARGIN, r_took
            assert outcome == 1011, outcome
            assert s_took < 2 * TIMEOUT + MARGIN, s_took

            # SIGCONT: the same Redis, with its data, answers again.
            deadline = time.monotonic() + 20
            while True:
                status, body = await asyncio.to_thread(
                    srv.request, "POST", "/api/v1/sessions",
                    {"namespace_id": "after", "key_hash": KEY_HASH},
                )  # fmt: skip
                if status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert status == 200, body
            assert (await asyncio.to_thread(srv.request, "GET", "/readyz"))[0] == 200
            status, old = await asyncio.to_thread(
                srv.request, "GET", f"/api/v1/sessions/{before['id']}",
                token=before.get("session_token"),
            )  # fmt: skip
            assert status == 200 and old["id"] == before["id"], old
            async with websockets.connect(srv.ws_url(body)) as ws2:
                assert json.loads(await ws2.recv())["type"] == "session.ready"
                await ws2.send(json.dumps({"type": "text", "text": "add tea to my list"}))
                events = []
                while not events or events[-1]["type"] != "response":
                    events.append(json.loads(await asyncio.wait_for(ws2.recv(), 10)))
                assert events[-1]["text"] == "Added tea to your list."
            await ws.close()
