"""Fixtures: back ends (local memory, or a real Redis), clients, sessions.

Redis tests use ``REDIS_TEST_URL`` (default ``redis://127.0.0.1:6379/15``) and flush that
database around each test. Without a Redis they skip, unless ``CI`` or ``REQUIRE_REDIS`` is
set: then they fail, so CI can never pass by skipping them.
"""

import asyncio
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.core.cache import caches
from django.test import override_settings
from rest_framework.test import APIClient

from core import clock, kv

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
KEY_HASH = "sha256:" + "ab" * 32


def _redis_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("REQUIRE_REDIS"))


def redis_or_skip() -> str:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if _redis_required():
            pytest.fail(f"Redis is required (CI/REQUIRE_REDIS set) but {REDIS_TEST_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_TEST_URL} ({exc}); set REDIS_TEST_URL to run these")
    return REDIS_TEST_URL


def redis_settings(url: str) -> dict:
    options = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    return {
        "REDIS_URL": url,
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "vs-test",
                "OPTIONS": options,
            },
        },
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": "vs-test-layer"},
            },
            "tasks": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": "vs-test-layer-tasks"},
            },
        },
    }


def _reset_state() -> None:
    kv.reset_kv()
    caches["default"].clear()
    clock.reset()


@pytest.fixture(autouse=True)
def clean_state():
    """Every test starts with empty state and the real clock."""
    _reset_state()
    channel_layers.backends.clear()
    yield
    _reset_state()
    channel_layers.backends.clear()


@pytest.fixture
def redis_backend():
    """Switch state and the channel layer to a real Redis for one test."""
    url = redis_or_skip()
    client = redis.Redis.from_url(url)
    client.flushdb()
    with override_settings(**redis_settings(url)):
        kv.reset_kv()
        channel_layers.backends.clear()
        yield client
        kv.reset_kv()
        channel_layers.backends.clear()
    client.flushdb()
    client.close()


@pytest.fixture
def owned_redis(tmp_path):
    """Like ``redis_backend``, on a redis-server of this test's own (tests/own_redis.py).

    For asserts on server-wide figures (``INFO commandstats``, ``connected_clients``) that any
    other client of a shared Redis would move.
    """
    from tests.own_redis import own_redis

    with own_redis(tmp_path) as (url, _proc), override_settings(**redis_settings(url)):
        client = redis.Redis.from_url(url)
        kv.reset_kv()
        channel_layers.backends.clear()
        yield client
        kv.reset_kv()
        channel_layers.backends.clear()
        client.close()


@pytest.fixture
def dead_redis():
    """State and channel layer pointed at a Redis that is not there (port 1), short timeouts."""
    settings = redis_settings("redis://127.0.0.1:1/0")
    for cache in settings["CACHES"].values():
        cache["OPTIONS"] = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    with override_settings(**settings):
        kv.reset_kv()
        channel_layers.backends.clear()
        yield
    kv.reset_kv()
    channel_layers.backends.clear()


@pytest.fixture(params=["locmem", "redis"])
def backend(request):
    """Run a test once on local memory and once on Redis."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_backend")
    else:
        yield None


class TestAPIClient(APIClient):
    """DRF's test client, usable from an async test as well.

    The API's views are async, and a sync client called on a running loop's thread cannot run
    them there; it then runs the request in a thread of its own while the loop waits. That suits
    creates and reads. A request whose view must reach this loop (a DELETE that closes a live
    socket) goes through the awaitable helpers below instead.
    """

    def request(self, **kwargs):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return super().request(**kwargs)
        send = super().request
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(send, **kwargs).result()


@pytest.fixture
def api():
    return TestAPIClient()


def create_session(client: APIClient, namespace_id: str = "user-1", **extra) -> dict:
    body = {"namespace_id": namespace_id, "key_hash": KEY_HASH, **extra}
    response = client.post("/api/v1/sessions", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def bearer(session: dict) -> dict:
    """The Authorization header of a session's holder (DRF test-client keyword form)."""
    return {"HTTP_AUTHORIZATION": f"Bearer {session['session_token']}"}


def hold(client: APIClient, session: dict) -> dict:
    """Make ``client`` the holder of ``session``: its later requests carry the token."""
    client.credentials(**bearer(session))
    return session


@pytest.fixture
def session(api):
    """A new session, held by the ``api`` client."""
    return hold(api, create_session(api))


def ws_path(session: dict) -> str:
    """The path and query of a session's websocket_url, for WebsocketCommunicator."""
    url = session["websocket_url"]
    return url[url.index("/ws/voice") :]


async def connect(session: dict, *, headers=None) -> tuple[WebsocketCommunicator, dict]:
    """Open the session's socket through the real ASGI application; returns it and ``ready``."""
    from voiceproject.asgi import application

    comm = WebsocketCommunicator(application, ws_path(session), headers=headers or [])
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready", ready
    return comm, ready


async def receive_until(comm: WebsocketCommunicator, event_type: str, timeout: float = 5):
    """Events up to and including the first of ``event_type``."""
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await comm.receive_json_from(timeout=max(0.01, deadline - loop.time()))
        seen.append(event)
        if event["type"] == event_type:
            return seen


async def close_code(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    """Read until the server closes the socket; returns the close code."""
    while True:
        out = await comm.receive_output(timeout=timeout)
        if out["type"] == "websocket.close":
            return out.get("code", 1000)


async def aget(client: APIClient, path: str):
    return await sync_to_async(client.get, thread_sensitive=False)(path)


async def apost(client: APIClient, path: str, body=None):
    return await sync_to_async(client.post, thread_sensitive=False)(path, body, format="json")


async def adelete(client: APIClient, path: str):
    return await sync_to_async(client.delete, thread_sensitive=False)(path)


@pytest.fixture
def captured_logs():
    """Every log line and Python warning, as the production formatter writes them (JSON), from
    every logger at every level; the levels are put back afterwards."""
    from core.logging import make_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("json"))
    loggers = [
        logging.getLogger(n) for n in ("", "django.request", "django.channels.server", "daphne")
    ]
    levels = [lg.level for lg in loggers]
    logging.getLogger().addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    yield stream
    logging.getLogger().removeHandler(handler)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


def redis_dump(client) -> dict[bytes, bytes]:
    """Every key of the test's Redis database and its values, concatenated."""
    out = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == b"hash":
            value = b" ".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == b"list":
            value = b" ".join(client.lrange(key, 0, -1))
        elif kind == b"zset":
            value = b" ".join(client.zrange(key, 0, -1))
        elif kind == b"string":
            value = client.get(key) or b""
        else:
            value = b""
        out[key] = value
    return out


@pytest.fixture
def pools():
    """``pools(engine_path, size)``: a recognizer pool with one worker process, stopped after
    the test."""
    from sessions_app.audio.recognizer import RecognizerPool

    made = []

    def make(path: str, size: int) -> RecognizerPool:
        pool = RecognizerPool(engine_path=path, size=size, processes=1)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop()
