"""Soak: open, use and close sockets in a loop on a real worker and Redis, then count leftovers.

Bounded in time (``SOAK_SECONDS``, default 90) and count (1500 sessions). Afterwards no
session key is left in Redis, memory has stopped growing (the last two thirds add at most
15 MiB), and the worker's file descriptors and Redis connections are back near the baseline
taken after a warm-up at the same load. The Redis is the test's own (``connected_clients`` is
server-wide, so any other client of a shared Redis would move it). "Near": connection pools
keep what the busiest moment needed, so the count moves by a few either way; a leak of one
per session would be hundreds.
"""

import asyncio
import json
import os
import time

import pytest
import redis
import websockets

from tests.live.servers import daphne
from tests.own_redis import own_redis

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.django_db(databases=[])]

PREFIX = "vs-soak"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _session_keys(client) -> list[bytes]:
    """Every key of the service but the workers' heartbeat index (there while a worker runs)
    and the create-rate counters of clients (one per client, not per session; they expire
    with their period, checked below)."""
    return [
        k
        for k in client.scan_iter(f"{PREFIX}:*", count=1000)
        if not k.endswith(b":workers") and b":rate:create:" not in k
    ]


def _rate_keys_expire_within_their_period(client, period_s: int) -> bool:
    keys = list(client.scan_iter(f"{PREFIX}:*:rate:create:*", count=1000))
    return all(0 < client.ttl(k) <= period_s for k in keys)


async def _one_session(srv, n: int) -> None:
    session = await asyncio.to_thread(srv.create_session, f"soak-{n % 50}")
    async with websockets.connect(srv.ws_url(session)) as ws:
        await ws.recv()
        for _ in range(10):
            await ws.send(b"\x00\x00" * 320)
        await ws.send(json.dumps({"type": "text", "text": "what is on my list"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "response":
            pass
        await ws.send(json.dumps({"type": "session.close"}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass


def _env(url: str) -> dict:
    return {
        "REDIS_URL": url, "TASK_RUNNER": "inprocess", "CACHE_KEY_PREFIX": PREFIX,
        "CONNECT_WINDOW_SECONDS": "6", "SESSION_CREATE_RATE": "1000000/min",
        "MAX_SESSIONS_PER_USER": "1000",
    }  # fmt: skip


async def test_sockets_opened_and_closed_for_minutes_leave_nothing_behind(tmp_path):
    seconds = float(os.environ.get("SOAK_SECONDS", "90"))
    with own_redis(tmp_path) as (url, _), daphne(tmp_path, "soak", **_env(url)) as srv:
        client = redis.Redis.from_url(url)
        pid = srv.proc.pid
        for round_ in range(5):  # warm up imports, thread and connection pools, at full load
            await asyncio.gather(*[_one_session(srv, 4 * round_ + i) for i in range(4)])
        await asyncio.sleep(1)
        base_fds, base_clients = _fds(pid), int(client.info("clients")["connected_clients"])
        started, n, rss_third = time.monotonic(), 0, None
        while time.monotonic() - started < seconds and n < 1500:
            await asyncio.gather(*[_one_session(srv, n + i) for i in range(4)])
            n += 4
            if rss_third is None and time.monotonic() - started > seconds / 3:
                rss_third = _rss_mib(pid)
        await asyncio.sleep(12)  # used tokens expire after the connect window + 5 s
        rss_end = _rss_mib(pid)
        assert n >= 40, "the soak must actually have run"
        assert _fds(pid) <= base_fds + 16, (base_fds, _fds(pid), n)
        clients = int(client.info("clients")["connected_clients"])
        assert clients <= base_clients + 16, (base_clients, clients, n)
        assert _session_keys(client) == []
        assert _rate_keys_expire_within_their_period(client, 60)  # SESSION_CREATE_RATE's /min
        assert rss_end - rss_third <= 15, (rss_third, rss_end, n)
