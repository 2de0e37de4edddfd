"""Two workers and a task ``runworker`` on one real Redis.

Worker a runs under daphne and b under uvicorn, so a mixed fleet is covered too.
"""

import asyncio
import json
import threading
import urllib.parse

import pytest
import redis
import websockets

from tests.conftest import redis_or_skip
from tests.live.servers import KEY_HASH, daphne, runworker, until, uvicorn

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    url = redis_or_skip()
    redis.Redis.from_url(url).flushdb()
    tmp = tmp_path_factory.mktemp("cluster")
    env = {"REDIS_URL": url, "TASK_RUNNER": "worker", "CACHE_KEY_PREFIX": "vs-live"}
    with daphne(tmp, "a", **env) as a, uvicorn(tmp, "b", **env) as b, runworker(tmp, **env):
        yield a, b
    redis.Redis.from_url(url).flushdb()


def test_a_session_created_on_one_worker_is_visible_on_the_other(cluster):
    a, b = cluster
    session = a.create_session("visible")
    status, body = b.request(
        "GET", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
    )
    assert status == 200 and body["id"] == session["id"]


def test_the_limit_holds_under_concurrent_creates_on_both_workers(cluster):
    a, b = cluster
    codes = []
    barrier = threading.Barrier(16)

    def attempt(server):
        barrier.wait()
        status, _ = server.request(
            "POST", "/api/v1/sessions", {"namespace_id": "racing", "key_hash": KEY_HASH}
        )
        codes.append(status)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in [a, b] * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 5 + [429] * 11


async def test_delete_on_one_worker_closes_the_socket_held_by_the_other(cluster):
    a, b = cluster
    session = a.create_session("closer")
    async with websockets.connect(b.ws_url(session)) as ws:
        await ws.recv()
        status, _ = await asyncio.to_thread(
            a.request, "DELETE", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
        )
        assert status == 200
        await until(ws, lambda e: e["type"] == "session.closed")
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd.code == 1000


async def test_tasks_run_in_the_runworker_and_their_events_reach_the_socket(cluster):
    a, b = cluster
    session = a.create_session("tasker")
    async with websockets.connect(b.ws_url(session)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "text", "text": "take a note the code is 99"}))
        events = await until(
            ws, lambda e: e["type"] == "task.updated" and e["task"]["state"] == "completed"
        )
        task_id = events[-1]["task"]["id"]
    status, body = await asyncio.to_thread(
        a.request, "GET", f"/api/v1/tasks/{task_id}/result", token=session["session_token"]
    )
    assert status == 200 and body == {"text": "the code is 99"}


async def test_resume_works_after_reconnecting_to_the_other_worker(cluster):
    a, b = cluster
    session = a.create_session("resumer")
    async with websockets.connect(a.ws_url(session)) as ws:
        ready = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "text", "text": "add milk to my list"}))
        first = await until(ws, lambda e: e["type"] == "response")
    _, fresh = await asyncio.to_thread(
        b.request, "GET", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
    )
    async with websockets.connect(b.ws_url(fresh)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.resume", "last_seq": ready["seq"]}))
        replayed = await until(ws, lambda e: e["type"] == "response")
    missed = {(e["seq"], e["type"]) for e in first}
    assert missed <= {(e["seq"], e["type"]) for e in replayed} | {
        (e["seq"], e["type"]) for e in first if e["type"] == "task.updated"
    }
    assert replayed[-1]["text"] == "Added milk to your list."


async def test_audio_counted_on_one_worker_shows_in_stats_on_the_other(cluster):
    a, b = cluster
    session = a.create_session("counter")
    async with websockets.connect(b.ws_url(session)) as ws:
        await ws.recv()
        for _ in range(25):
            await ws.send(b"\x00\x00" * 320)
        await asyncio.sleep(1.2)
        path = f"/api/v1/sessions/{urllib.parse.quote(session['id'])}/stats"
        _, stats = await asyncio.to_thread(a.request, "GET", path, token=session["session_token"])
    assert stats["audio_chunks_received"] == 25
    assert stats["audio_chunks_processed"] == 25


async def test_a_socket_on_one_worker_is_taken_over_by_a_reconnect_on_the_other(cluster):
    """Takeover across processes: the newer socket on b closes the older one on a with 4409."""
    a, b = cluster
    session = a.create_session("taker")
    first = await websockets.connect(a.ws_url(session))
    assert json.loads(await first.recv())["type"] == "session.ready"
    status, fresh = await asyncio.to_thread(
        b.request, "GET", f"/api/v1/sessions/{session['id']}", token=session.get("session_token")
    )
    assert status == 200
    async with websockets.connect(b.ws_url(fresh)) as second:
        assert json.loads(await second.recv())["type"] == "session.ready"
        events = []
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                events.append(json.loads(await asyncio.wait_for(first.recv(), 10)))
        assert info.value.rcvd.code == 4409
        assert events[-1]["close_code"] == 4409 and events[-1]["code"] == "replaced"
        await second.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(second.recv(), 10))["type"] == "pong"
        status, body = await asyncio.to_thread(
            a.request,
            "GET",
            f"/api/v1/sessions/{session['id']}",
            token=session.get("session_token"),
        )
        assert body["status"] == "connected", "the replaced socket must not mark it detached"
