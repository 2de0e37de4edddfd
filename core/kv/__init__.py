"""Atomic primitives over Django's default cache, for the apps' ``store`` modules.

This package knows no key and no TTL of its own: ``sessions_app.store`` and
``tasks_app.store`` build every key and choose every TTL, then call these primitives. There are
two implementations behind one interface:

* ``LocalKV`` (:mod:`core.kv.local`) for one process: Python structures in dicts of its own,
  one process lock making each read-modify-write atomic.
* ``RedisKV`` (:mod:`core.kv.redis`) for Redis or Valkey (many processes): each
  read-modify-write that could race across workers is one Lua script, atomic on the server.

This module is the factory: which store a cache alias gets, once per process.

Every key written here carries an expiry; nothing lives forever.

Code on the event loop (every service, selector and store function) uses :func:`aget_kv`: the
same primitives as awaitables, inline on local memory, an asyncio Redis client on Redis, so a
request or a socket never leaves the loop. None of it happens per audio frame. :func:`get_kv`
is for the few sync steps that need no loop (the parity tests, the operators' heartbeat).
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from core.kv.common import KVUnavailable, StoreFull
from core.kv.local import AsyncLocalKV, LocalKV
from core.kv.redis import AsyncRedisKV, RedisKV

__all__ = [
    "AsyncLocalKV",
    "AsyncRedisKV",
    "KVUnavailable",
    "LocalKV",
    "RedisKV",
    "StoreFull",
    "aget_kv",
    "get_kv",
    "reset_kv",
]


_kv: dict[str, LocalKV | RedisKV] = {}
_kv_lock = threading.Lock()
# Async primitives: one per cache alias for local memory; for Redis one per event loop too.
_akv_local: dict[str, AsyncLocalKV] = {}
_akv_redis: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Django's own options for its Redis cache, not the client's.
_DJANGO_ONLY_OPTIONS = {"pool_class", "parser_class", "serializer"}
ASYNC_POOL_CONNECTIONS = 64


def get_kv(alias: str = "default") -> LocalKV | RedisKV:
    """The primitives for a cache alias, built once per process."""
    kv = _kv.get(alias)
    if kv is None:
        with _kv_lock:
            kv = _kv.get(alias)
            if kv is None:
                cache = caches[alias]
                kv = RedisKV(cache) if isinstance(cache, RedisCache) else LocalKV(cache)
                _kv[alias] = kv
    return kv


def aget_kv(alias: str = "default") -> AsyncLocalKV | AsyncRedisKV:
    """The primitives as awaitables, for code running on an event loop (no thread hop).

    On Redis they use an asyncio client of this loop, with the cache's socket timeouts and a
    bounded pool: a request that finds all its connections busy waits at most the socket
    timeout, then fails like any other Redis error (503).
    """
    kv = get_kv(alias)
    if isinstance(kv, LocalKV):
        akv = _akv_local.get(alias)
        if akv is None:
            akv = _akv_local[alias] = AsyncLocalKV(kv)
        return akv
    per_loop = _akv_redis.setdefault(asyncio.get_running_loop(), {})
    akv = per_loop.get(alias)
    if akv is None:
        akv = per_loop[alias] = AsyncRedisKV(kv._cache, _async_client(alias))
    return akv


def _async_client(alias: str):
    import redis.asyncio

    conf = settings.CACHES[alias]
    options = {k: v for k, v in conf.get("OPTIONS", {}).items() if k not in _DJANGO_ONLY_OPTIONS}
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        conf["LOCATION"],
        max_connections=ASYNC_POOL_CONNECTIONS,
        timeout=options.get("socket_timeout") or 2.0,
        **options,
    )
    return redis.asyncio.Redis(connection_pool=pool)


def reset_kv() -> None:
    """Forget built back ends (tests switch settings between cases)."""
    _kv.clear()
    _akv_local.clear()
    _akv_redis.clear()
