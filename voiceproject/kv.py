"""Atomic primitives over Django's default cache, for the apps' ``store`` modules.

This module knows no key and no TTL of its own: ``sessions_app.store`` and
``tasks_app.store`` build every key and choose every TTL, then call these primitives. There are
two implementations behind one interface:

* ``LocalKV`` for the local-memory cache (one process): values are Python structures in
  ``LocMemCache``, and one process lock makes each read-modify-write atomic.
* ``RedisKV`` for Redis or Valkey (many processes): each read-modify-write that could race
  across workers is one Lua script, so it is atomic on the server.

Every key written here carries an expiry; nothing lives forever.

Code on the event loop has two ways in. :func:`aget_kv` gives the same primitives as
awaitables: inline on local memory, an asyncio Redis client on Redis; the API's reads use it,
so a request never leaves the loop. :func:`aio` runs a whole sync store function, inline on
local memory or in a worker thread on Redis; the sockets' less frequent steps use it. Neither
happens per audio frame.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import threading
import time
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


class KVUnavailable(Exception):
    """The state back end did not answer (Redis down or timing out)."""


# --------------------------------------------------------------------------------------
# Lua scripts: each is one atomic step on the Redis server.
# --------------------------------------------------------------------------------------

# KEYS[1] lease zset. ARGV: member, limit, now, until, ttl_ms.
# Drops expired leases, refuses when the namespace is full, else adds the lease.
_LUA_LEASE_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""

# KEYS[1] lease zset, KEYS[2] the set's owner tag. ARGV: member, limit, now, until, ttl_ms,
# owner. As above, and the live leases of a set share one owner: while any is live, another
# owner is refused (-1); once none is, the next acquire sets the owner. The tag lives as long
# as the set. Returns 1 (acquired), 0 (full) or -1 (another owner holds the set).
_LUA_LEASE_ACQUIRE_OWNED = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local cur = redis.call('GET', KEYS[2])
if n > 0 and cur and cur ~= ARGV[6] then return -1 end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], ARGV[6], 'PX', redis.call('PTTL', KEYS[1]))
return 1
"""

# KEYS[1] sorted index. ARGV: upto, limit. Takes out and returns the members scored at or
# below ``upto`` (at most ``limit``): each is handed to exactly one caller, on any worker.
_LUA_INDEX_POP_UPTO = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""

# KEYS[1] lease zset. ARGV: member, until, ttl_ms. Extends an existing lease only.
_LUA_LEASE_EXTEND = """
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0
"""

# KEYS[1] hash. ARGV: field, value, field, value, ... Only if the hash exists (keeps TTL).
_LUA_HUPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS[1] hash. ARGV: field, delta, ... Only if the hash exists; returns new values.
_LUA_HINCR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return out
"""

# KEYS[1] hash. ARGV: field, allowed_csv, then field/value pairs to set on success.
# Returns {1, old} when the field's value was one of the allowed ones, {0, current} else.
_LUA_HCAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, false} end
for v in string.gmatch(ARGV[2], '[^,]+') do
  if v == cur then
    if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
    return {1, cur}
  end
end
return {0, cur}
"""

# KEYS[1] session hash, KEYS[2] buffer list. ARGV: seq field, lost field, payload, cap, buffered.
# One event: next seq from the hash; when buffered, append "seq payload" to the capped list,
# and remember the highest seq that fell out so a resume can say events were lost.
_LUA_EMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local seq = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[5] == '1' then
  redis.call('RPUSH', KEYS[2], seq .. ' ' .. ARGV[3])
  if redis.call('LLEN', KEYS[2]) > tonumber(ARGV[4]) then
    local old = redis.call('LPOP', KEYS[2])
    redis.call('HSET', KEYS[1], ARGV[2], string.match(old, '^(%d+)'))
  end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return seq
"""

# KEYS[1] list. ARGV: item, cap, ttl_ms.
_LUA_LPUSH_CAPPED = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LLEN', KEYS[1])
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _same(value):
    return value


def _decode_hash(raw) -> dict[str, str] | None:
    return {f.decode(): v.decode() for f, v in raw.items()} if raw else None


def _decode_all(items) -> list[str]:
    return [x.decode() for x in items]


def _decode_or_none(values) -> list[str | None]:
    return [v.decode() if v is not None else None for v in values]


def _decode_buffer(items) -> list[tuple[int, str]]:
    out = []
    for raw in items:
        seq, _, payload = raw.decode().partition(" ")
        out.append((int(seq), payload))
    return out


def _hcas_result(out) -> tuple[bool, str | None]:
    ok, cur = out
    return bool(ok), (cur.decode() if cur else None)


class RedisKV:
    """Primitives on Redis; the connection pool is the one Django's cache uses.

    Each method states its Redis step as ``self._do(step, shape)``: ``step`` takes the client
    and issues the command (a call, a script, or ``self._pipe`` for several), ``shape`` turns
    the reply into the method's result. :class:`AsyncRedisKV` runs the same methods on an
    asyncio client by awaiting the step, so the two never drift apart.
    """

    local = False

    def __init__(self, cache, client=None):
        self._cache = cache
        self._client = client if client is not None else cache._cache.get_client(write=True)
        self._scripts = {
            name: self._client.register_script(src)
            for name, src in {
                "lease_acquire": _LUA_LEASE_ACQUIRE,
                "lease_acquire_owned": _LUA_LEASE_ACQUIRE_OWNED,
                "index_pop_upto": _LUA_INDEX_POP_UPTO,
                "lease_extend": _LUA_LEASE_EXTEND,
                "hupdate": _LUA_HUPDATE,
                "hincr": _LUA_HINCR,
                "hcas": _LUA_HCAS,
                "emit": _LUA_EMIT,
                "list_push": _LUA_LPUSH_CAPPED,
            }.items()
        }

    def _k(self, key: str) -> str:
        return self._cache.make_key(key)

    def _do(self, step, shape=_same):
        try:
            reply = step(self._client)
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ...
            raise _wrap(exc) from exc
        return shape(reply)

    @staticmethod
    def _pipe(client, commands: list[tuple], *, transaction: bool):
        with client.pipeline(transaction=transaction) as p:
            for name, *args in commands:
                getattr(p, name)(*args)
            return p.execute()

    def _script(self, name: str, keys: list[str], args: list[Any], shape=_same):
        keys = [self._k(k) for k in keys]
        return self._do(lambda c: self._scripts[name](keys=keys, args=args), shape)

    def _call(self, method: str, *args, shape=_same, **kwargs):
        return self._do(lambda c: getattr(c, method)(*args, **kwargs), shape)

    # hashes ---------------------------------------------------------------------------
    def hash_create(self, key: str, mapping: dict[str, Any], ttl: float) -> None:
        k = self._k(key)
        commands = [
            ("delete", k),
            ("hset", k, None, None, {f: _enc(v) for f, v in mapping.items()}),
            ("pexpire", k, _ms(ttl)),
        ]
        return self._do(lambda c: self._pipe(c, commands, transaction=True), lambda _: None)

    def hash_get(self, key: str) -> dict[str, str] | None:
        return self._call("hgetall", self._k(key), shape=_decode_hash)

    def hash_update(self, key: str, mapping: dict[str, Any]) -> bool:
        args: list[Any] = []
        for f, v in mapping.items():
            args += [f, _enc(v)]
        return self._script("hupdate", [key], args, bool)

    def hash_incr(self, key: str, deltas: dict[str, int]) -> dict[str, int] | None:
        args: list[Any] = []
        for f, d in deltas.items():
            args += [f, int(d)]

        def shape(out):
            return None if out is None else dict(zip(deltas, (int(x) for x in out), strict=True))

        return self._script("hincr", [key], args, shape)

    def hash_cas(
        self, key: str, field: str, allowed: tuple[str, ...], mapping: dict[str, Any]
    ) -> tuple[bool, str | None]:
        args: list[Any] = [field, ",".join(allowed)]
        for f, v in mapping.items():
            args += [f, _enc(v)]
        return self._script("hcas", [key], args, _hcas_result)

    # expiry / removal -----------------------------------------------------------------
    def expire(self, key: str, ttl: float) -> bool:
        return self._call("pexpire", self._k(key), _ms(ttl), shape=bool)

    def ttl(self, key: str) -> float | None:
        return self._call("pttl", self._k(key), shape=lambda ms: None if ms < 0 else ms / 1000)

    def delete(self, *keys: str) -> None:
        # A pipeline: with no keys it sends nothing, where a bare DEL would be an error.
        commands = [("delete", self._k(k)) for k in keys]
        return self._do(lambda c: self._pipe(c, commands, transaction=True), lambda _: None)

    def claim(self, key: str, ttl: float) -> bool:
        """Set-if-absent: True for the first caller only."""
        return self._call("set", self._k(key), b"1", nx=True, px=_ms(ttl), shape=bool)

    # leases (sorted set: member -> lease end) ------------------------------------------
    def lease_acquire(
        self, key: str, member: str, *, limit: int, now: float, until: float, ttl: float
    ) -> bool:
        return self._script("lease_acquire", [key], [member, limit, now, until, _ms(ttl)], bool)

    def lease_acquire_owned(
        self,
        key: str,
        owner_key: str,
        member: str,
        *,
        owner: str,
        limit: int,
        now: float,
        until: float,
        ttl: float,
    ) -> int:
        return self._script(
            "lease_acquire_owned",
            [key, owner_key],
            [member, limit, now, until, _ms(ttl), owner],
            int,
        )

    def lease_extend(self, key: str, member: str, *, until: float, ttl: float) -> bool:
        return self._script("lease_extend", [key], [member, until, _ms(ttl)], bool)

    def lease_release(self, key: str, member: str) -> None:
        return self._call("zrem", self._k(key), member, shape=lambda _: None)

    def lease_count(self, key: str, *, now: float) -> int:
        return self._call("zcount", self._k(key), f"({now}", "+inf", shape=int)

    def lease_members(self, key: str, *, now: float, offset: int, limit: int) -> list[str]:
        """Members whose lease has not ended, soonest end first (a page of them)."""
        return self._call(
            "zrangebyscore", self._k(key), f"({now}", "+inf", start=offset, num=limit,
            shape=_decode_all,
        )  # fmt: skip

    def hash_fields(self, keys: list[str], field: str) -> list[str | None]:
        """One field of many hashes, in one round trip."""
        commands = [("hget", self._k(key), field) for key in keys]
        return self._do(lambda c: self._pipe(c, commands, transaction=False), _decode_or_none)

    # sorted index (member -> score) -----------------------------------------------------
    def index_add(
        self, key: str, member: str, score: float, ttl: float, *, drop_below: float | None = None
    ) -> None:
        k = self._k(key)
        commands: list[tuple] = []
        if drop_below is not None:
            commands.append(("zremrangebyscore", k, "-inf", f"({drop_below}"))
        commands += [("zadd", k, {member: score}), ("pexpire", k, _ms(ttl))]
        return self._do(lambda c: self._pipe(c, commands, transaction=True), lambda _: None)

    def index_members(self, key: str) -> list[str]:
        return self._call("zrange", self._k(key), 0, -1, shape=_decode_all)

    def index_page(self, key: str, *, offset: int, limit: int) -> list[tuple[str, float]]:
        """Highest scores first (newest), one page."""
        return self._call(
            "zrevrange", self._k(key), offset, offset + limit - 1, withscores=True,
            shape=lambda rows: [(m.decode(), float(score)) for m, score in rows],
        )  # fmt: skip

    def index_pop_upto(self, key: str, *, upto: float, limit: int) -> list[str]:
        """Take out the members scored at or below ``upto``, lowest first (atomic)."""
        return self._script("index_pop_upto", [key], [upto, limit], _decode_all)

    # event stream -----------------------------------------------------------------------
    def emit(
        self, hash_key: str, list_key: str, *, payload: str, cap: int, buffered: bool
    ) -> int | None:
        return self._script(
            "emit",
            [hash_key, list_key],
            ["seq", "lost_upto", payload, cap, "1" if buffered else "0"],
            lambda out: None if out is None else int(out),
        )

    def buffer_read(self, list_key: str) -> list[tuple[int, str]]:
        return self._call("lrange", self._k(list_key), 0, -1, shape=_decode_buffer)

    # capped list ------------------------------------------------------------------------
    def list_push(self, key: str, item: str, *, cap: int, ttl: float) -> int:
        return self._script("list_push", [key], [item, cap, _ms(ttl)], int)

    def list_read(self, key: str) -> list[str]:
        return self._call("lrange", self._k(key), 0, -1, shape=_decode_all)

    def ping(self) -> bool:
        return self._call("ping", shape=bool)


class AsyncRedisKV(RedisKV):
    """:class:`RedisKV` on an asyncio client: every method returns an awaitable.

    The client's connections belong to the event loop that made it, so there is one of these
    per loop (:func:`aget_kv`); a server process has one loop.
    """

    async def _do(self, step, shape=_same):
        try:
            reply = await step(self._client)
        except Exception as exc:
            raise _wrap(exc) from exc
        return shape(reply)

    @staticmethod
    async def _pipe(client, commands: list[tuple], *, transaction: bool):
        async with client.pipeline(transaction=transaction) as p:
            for name, *args in commands:
                getattr(p, name)(*args)
            return await p.execute()


class AsyncLocalKV:
    """:class:`LocalKV` behind awaitable methods: each runs inline (a dict operation)."""

    local = True

    def __init__(self, kv: LocalKV):
        self._kv = kv

    def __getattr__(self, name: str):
        method = getattr(self._kv, name)

        async def call(*args, **kwargs):
            return method(*args, **kwargs)

        return call


class LocalKV:
    """Primitives on ``LocMemCache``: one process, one lock, every key with an expiry."""

    local = True

    def __init__(self, cache):
        self._cache = cache
        self._lock = threading.RLock()
        self._leases: dict[str, dict[str, float]] = {}
        self._indexes: dict[str, tuple[float, dict[str, float]]] = {}
        self._ends: list[tuple[float, str, str]] = []  # heap: (lease end, set, member)
        self._owners: dict[str, str] = {}  # lease set -> the owner of its live leases

    # A value is stored as (expires_at, data) so that updates can keep the remaining TTL.
    def _get(self, key: str):
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires_at, data = entry
        if expires_at <= time.time():
            self._cache.delete(key)
            return None
        return data

    def _put(self, key: str, data, *, ttl: float | None = None, keep: bool = False) -> None:
        if keep:
            entry = self._cache.get(key)
            expires_at = entry[0] if entry else time.time() + (ttl or 1)
        else:
            expires_at = time.time() + float(ttl or 1)
        self._cache.set(key, (expires_at, data), max(0.001, expires_at - time.time()))

    def hash_create(self, key: str, mapping: dict[str, Any], ttl: float) -> None:
        with self._lock:
            self._put(key, {f: _enc(v) for f, v in mapping.items()}, ttl=ttl)

    def hash_get(self, key: str) -> dict[str, str] | None:
        with self._lock:
            data = self._get(key)
            return dict(data) if data else None

    def hash_update(self, key: str, mapping: dict[str, Any]) -> bool:
        with self._lock:
            data = self._get(key)
            if data is None:
                return False
            data.update({f: _enc(v) for f, v in mapping.items()})
            self._put(key, data, keep=True)
            return True

    def hash_incr(self, key: str, deltas: dict[str, int]) -> dict[str, int] | None:
        with self._lock:
            data = self._get(key)
            if data is None:
                return None
            out = {}
            for f, d in deltas.items():
                out[f] = int(data.get(f, 0)) + int(d)
                data[f] = str(out[f])
            self._put(key, data, keep=True)
            return out

    def hash_cas(
        self, key: str, field: str, allowed: tuple[str, ...], mapping: dict[str, Any]
    ) -> tuple[bool, str | None]:
        with self._lock:
            data = self._get(key)
            if data is None or field not in data:
                return False, None
            cur = data[field]
            if cur not in allowed:
                return False, cur
            data.update({f: _enc(v) for f, v in mapping.items()})
            self._put(key, data, keep=True)
            return True, cur

    def expire(self, key: str, ttl: float) -> bool:
        with self._lock:
            data = self._get(key)
            if data is None:
                return False
            self._put(key, data, ttl=ttl)
            return True

    def ttl(self, key: str) -> float | None:
        with self._lock:
            entry = self._cache.get(key)
            return None if entry is None else max(0.0, entry[0] - time.time())

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._cache.delete(k)
                self._indexes.pop(k, None)

    def claim(self, key: str, ttl: float) -> bool:
        with self._lock:
            if self._get(key) is not None:
                return False
            self._put(key, True, ttl=ttl)
            return True

    # Lease sets are kept as native dicts, not pickled into LocMemCache: the index of live
    # sessions holds every session, and re-pickling it on each create would make creates
    # cost O(sessions). Every lease written is also pushed on a heap by its end, and each
    # acquire pops what has ended since: ended leases and empty sets go away for O(log n) a
    # write, however many sets there are. (A heap entry of a lease extended or released
    # since is stale and only popped.)
    def _lease_set(self, key: str) -> dict[str, float]:
        return self._leases.setdefault(key, {})

    def _lease_write(self, leases: dict[str, float], key: str, member: str, until: float):
        leases[member] = until
        heapq.heappush(self._ends, (until, key, member))

    def _drop_ended(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, key, member = heapq.heappop(ends)
            leases = self._leases.get(key)
            if leases is not None and member in leases and leases[member] <= now:
                del leases[member]
                if not leases:
                    del self._leases[key]
                    self._owners.pop(key, None)

    def lease_acquire(
        self, key: str, member: str, *, limit: int, now: float, until: float, ttl: float
    ) -> bool:
        with self._lock:
            leases = self._lease_set(key)
            if limit < len(leases) + 1:  # only then is counting the live ones needed
                for m in [m for m, t in leases.items() if t <= now]:
                    del leases[m]
                if len(leases) >= limit:
                    return False
            self._lease_write(leases, key, member, until)
            self._drop_ended(now)
            return True

    def lease_acquire_owned(
        self,
        key: str,
        owner_key: str,
        member: str,
        *,
        owner: str,
        limit: int,
        now: float,
        until: float,
        ttl: float,
    ) -> int:
        # The owner tag is kept with the set itself here (``owner_key`` names it on Redis).
        with self._lock:
            leases = self._lease_set(key)
            for m in [m for m, t in leases.items() if t <= now]:
                del leases[m]
            current = self._owners.get(key)
            if leases and current is not None and current != owner:
                return -1
            if len(leases) >= limit:
                return 0
            self._lease_write(leases, key, member, until)
            self._owners[key] = owner
            self._drop_ended(now)
            return 1

    def lease_extend(self, key: str, member: str, *, until: float, ttl: float) -> bool:
        with self._lock:
            leases = self._leases.get(key)
            if not leases or member not in leases:
                return False
            self._lease_write(leases, key, member, until)
            return True

    def lease_release(self, key: str, member: str) -> None:
        with self._lock:
            leases = self._leases.get(key)
            if leases is not None:
                leases.pop(member, None)
                if not leases:
                    del self._leases[key]
                    self._owners.pop(key, None)

    def lease_count(self, key: str, *, now: float) -> int:
        with self._lock:
            return sum(1 for t in self._leases.get(key, {}).values() if t > now)

    def lease_members(self, key: str, *, now: float, offset: int, limit: int) -> list[str]:
        with self._lock:
            live = sorted((t, m) for m, t in self._leases.get(key, {}).items() if t > now)
            return [m for _, m in live[offset : offset + limit]]

    def hash_fields(self, keys: list[str], field: str) -> list[str | None]:
        with self._lock:
            return [(self._get(k) or {}).get(field) for k in keys]

    # Sorted indexes are native dicts too (the task index holds every task); each has an
    # expiry of its own, like a Redis key.
    def index_add(
        self, key: str, member: str, score: float, ttl: float, *, drop_below: float | None = None
    ) -> None:
        with self._lock:
            expires_at, index = self._indexes.get(key, (0.0, {}))
            if expires_at <= time.time():
                index = {}
            if drop_below is not None and len(index) % 100 == 0:
                index = {m: sc for m, sc in index.items() if sc >= drop_below}
            index[member] = score
            self._indexes[key] = (time.time() + ttl, index)

    def _index(self, key: str) -> dict[str, float]:
        expires_at, index = self._indexes.get(key, (0.0, {}))
        return index if expires_at > time.time() else {}

    def index_members(self, key: str) -> list[str]:
        with self._lock:
            index = self._index(key)
            return sorted(index, key=index.__getitem__)

    def index_page(self, key: str, *, offset: int, limit: int) -> list[tuple[str, float]]:
        with self._lock:
            rows = sorted(self._index(key).items(), key=lambda kv: kv[1], reverse=True)
            return rows[offset : offset + limit]

    def index_pop_upto(self, key: str, *, upto: float, limit: int) -> list[str]:
        with self._lock:
            index = self._index(key)
            due = sorted((sc, m) for m, sc in index.items() if sc <= upto)[:limit]
            for _, member in due:
                del index[member]
            return [m for _, m in due]

    def emit(
        self, hash_key: str, list_key: str, *, payload: str, cap: int, buffered: bool
    ) -> int | None:
        with self._lock:
            data = self._get(hash_key)
            if data is None:
                return None
            seq = int(data.get("seq", 0)) + 1
            data["seq"] = str(seq)
            if buffered:
                items = self._get(list_key) or []
                items.append((seq, payload))
                if len(items) > cap:
                    data["lost_upto"] = str(items.pop(0)[0])
                self._put(list_key, items, ttl=self.ttl(hash_key) or 1)
            self._put(hash_key, data, keep=True)
            return seq

    def buffer_read(self, list_key: str) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._get(list_key) or [])

    def list_push(self, key: str, item: str, *, cap: int, ttl: float) -> int:
        with self._lock:
            items = (self._get(key) or [])[-(cap - 1) :] if cap > 1 else []
            items.append(item)
            self._put(key, items, ttl=ttl)
            return len(items)

    def list_read(self, key: str) -> list[str]:
        with self._lock:
            return list(self._get(key) or [])

    def ping(self) -> bool:
        return True


def _enc(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _wrap(exc: Exception) -> Exception:
    import redis

    from voiceproject.metrics import REDIS_ERRORS

    if isinstance(exc, redis.RedisError | OSError):
        REDIS_ERRORS.inc()
        return KVUnavailable(type(exc).__name__)
    return exc


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


def aio(fn):
    """An async twin of a sync store function: inline on local memory, a thread on Redis."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        if get_kv().local:
            return fn(*args, **kwargs)
        return await sync_to_async(fn, thread_sensitive=False)(*args, **kwargs)

    wrapper.__name__ = "a" + fn.__name__
    return wrapper
