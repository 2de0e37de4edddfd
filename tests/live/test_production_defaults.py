"""The service as deployed: uvicorn on the production defaults, on local memory and on Redis.

The worker gets only what docs/operations.md says a deployment must set (``SECRET_KEY``,
``ALLOWED_HOSTS``, and ``REDIS_URL`` for the Redis run): DEBUG off, the default socket tick,
heartbeats, create throttle and limits. None of the test settings reach it
(``tests/live/servers.py:base_env``). ``test_real_servers.py`` runs the whole client flow the
same way under daphne and uvicorn; this file checks that the defaults are really in force.
"""

import asyncio
import json
import subprocess
import sys
import time

import pytest
import redis
import websockets

from tests.live.servers import KEY_HASH, ROOT, base_env, free_port, production_env, uvicorn
from tests.own_redis import own_redis

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]


@pytest.fixture(scope="module", params=["locmem", "redis"])
def deployed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"production-{request.param}")
    if request.param == "locmem":
        with uvicorn(tmp, "web", **production_env()) as srv:
            yield srv, None
        return
    with own_redis(tmp) as (url, _), uvicorn(tmp, "web", **production_env(REDIS_URL=url)) as srv:
        yield srv, redis.Redis.from_url(url)


async def test_the_socket_announces_the_default_limits(deployed):
    srv, _ = deployed
    async with websockets.connect(srv.ws_url(srv.create_session("limits"))) as ws:
        ready = json.loads(await ws.recv())
    assert ready["limits"]["max_frame_bytes"] == 65536
    assert ready["limits"]["idle_timeout_seconds"] == 120
    assert ready["limits"]["max_audio_speed"] == 2.0


async def test_audio_counts_reach_stats_on_the_default_half_second_tick(deployed):
    """Counts are flushed once per tick: up to 0.5 s on the default, 0.05 s on the test one.

    Six frames, each timed until stats show it: with a 0.5 s tick the chance that all six
    show within 0.1 s is 0.2 ** 6 (1 in 15,000); with the test tick they always do.
    """
    srv, _ = deployed
    session = srv.create_session("ticking")
    path = f"/api/v1/sessions/{session['id']}/stats"
    token = session.get("session_token")
    delays = []
    async with websockets.connect(srv.ws_url(session)) as ws:
        await ws.recv()
        for n in range(1, 7):
            await ws.send(b"\x00\x00" * 320)
            sent = time.monotonic()
            while True:
                _, stats = await asyncio.to_thread(srv.request, "GET", path, token=token)
                if stats["audio_chunks_received"] == n:
                    break
                assert time.monotonic() - sent < 5, stats
                await asyncio.sleep(0.01)
            delays.append(time.monotonic() - sent)
    assert max(delays) > 0.1, delays
    assert max(delays) < 2.0, delays  # one tick, the request's own time, a busy machine


def test_errors_are_json_with_no_debug_page(deployed):
    srv, _ = deployed
    status, body = srv.request("GET", "/nowhere")
    assert status == 404 and body == {"detail": "Not found"}
    status, body = srv.request("GET", "/api/v1/sessions/not-a-session")
    assert 400 <= status < 500 and isinstance(body, dict), body
    status, body = srv.request("POST", "/api/v1/sessions", headers={"content-type": "text/plain"})
    assert 400 <= status < 500 and "Traceback" not in json.dumps(body)


async def test_the_redis_run_beats_its_heartbeat(deployed):
    _, client = deployed
    if client is None:
        pytest.skip("the heartbeat is read from Redis")
    deadline = time.monotonic() + 15  # WORKER_HEARTBEAT_SECONDS: 10 by default
    while not any(k.endswith(b":workers") for k in client.keys("*")):
        assert time.monotonic() < deadline, "no heartbeat from a worker on the defaults"
        await asyncio.sleep(0.2)


def test_creates_are_throttled_at_the_default_120_a_minute(tmp_path):
    """Its own worker: after this, 127.0.0.1 may not create for a minute."""
    with uvicorn(tmp_path, "throttled", **production_env()) as srv:
        codes = []
        for i in range(125):
            status, body = srv.request(
                "POST", "/api/v1/sessions", {"namespace_id": f"t-{i}", "key_hash": KEY_HASH}
            )
            codes.append(status)
            if status == 429:
                assert "throttled" in body["detail"].lower(), body
                break
    assert codes[:120] == [200] * 120, codes
    assert codes[120:] == [429], codes


def test_the_server_refuses_to_start_without_a_secret_key(tmp_path):
    """What a production server does when SECRET_KEY is missing, whatever manage.py does."""
    env = base_env(SECRET_KEY=None, ALLOWED_HOSTS="voice.example.com")
    assert "SECRET_KEY" not in env and "DEBUG" not in env
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "voiceproject.asgi:application",
         "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr + result.stdout
