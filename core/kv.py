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


class StoreFull(Exception):
    """The embedded store holds ``LOCAL_STORE_MAX_ENTRIES`` entries: no new record fits."""


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

# KEYS[1] lease zset, KEYS[2] its owner tag. ARGV: member. Releases the lease; the tag goes
# with the last one, so an empty set leaves nothing behind.
_LUA_LEASE_RELEASE_OWNED = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
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

# KEYS[1] session hash, KEYS[2] buffer list.
# ARGV: seq field, lost field, payload, cap, buffered, max_bytes, tally field.
# One event: next seq from the hash; when buffered, append "seq payload" to the list, drop the
# oldest entries while it holds more than cap entries or (max_bytes > 0) more than max_bytes
# bytes (the running total is the hash's tally field), and remember the highest seq that fell
# out so a resume can say events were lost. An entry larger than the whole budget is dropped
# at once: it was delivered live, but it is not kept.
_LUA_EMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local seq = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[5] == '1' then
  local entry = seq .. ' ' .. ARGV[3]
  local cap = tonumber(ARGV[4])
  local budget = tonumber(ARGV[6])
  local size = 0
  redis.call('RPUSH', KEYS[2], entry)
  if budget > 0 then size = redis.call('HINCRBY', KEYS[1], ARGV[7], #entry) end
  local lost = nil
  while redis.call('LLEN', KEYS[2]) > cap or (budget > 0 and size > budget) do
    local old = redis.call('LPOP', KEYS[2])
    if not old then break end
    lost = old
    if budget > 0 then size = redis.call('HINCRBY', KEYS[1], ARGV[7], -#old) end
  end
  if budget > 0 and redis.call('LLEN', KEYS[2]) == 0 then
    redis.call('HSET', KEYS[1], ARGV[7], 0)
  end
  if lost then redis.call('HSET', KEYS[1], ARGV[2], string.match(lost, '^(%d+)')) end
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

# KEYS[1] list, KEYS[2] tally hash. ARGV: item, cap, ttl_ms, max_bytes, tally field.
# A capped list with a byte budget: the running total of its bytes is a field of a hash that
# lives beside it (nothing is written once that hash is gone). The oldest items go first.
_LUA_LPUSH_BUDGET = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
local budget = tonumber(ARGV[4])
local size = redis.call('HINCRBY', KEYS[2], ARGV[5], #ARGV[1])
while redis.call('LLEN', KEYS[1]) > cap or size > budget do
  local old = redis.call('LPOP', KEYS[1])
  if not old then break end
  size = redis.call('HINCRBY', KEYS[2], ARGV[5], -#old)
end
local n = redis.call('LLEN', KEYS[1])
if n == 0 then redis.call('HSET', KEYS[2], ARGV[5], 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""

# KEYS[1] sorted index, KEYS[2] counter hash. ARGV: member, score, ttl_ms, limit, then
# field/delta pairs. Adds a member unless the index already holds ``limit`` members, and
# moves the counters kept beside the index in the same step. Returns 1 if the member is in.
_LUA_INDEX_ADD_COUNTED = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
for i = 5, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS[1] hash, KEYS[2] counter hash. ARGV: field, allowed_csv, deltas_csv (one per allowed
# value), counter field, then field/value pairs to set on success.
# _LUA_HCAS, and on success the counter moves by the delta of the value it moved from (only
# while the counter hash exists). Returns {1, old} or {0, current}.
_LUA_HCAS_COUNTED = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, false} end
local deltas = {}
for d in string.gmatch(ARGV[3], '[^,]+') do deltas[#deltas + 1] = tonumber(d) end
local i = 0
for v in string.gmatch(ARGV[2], '[^,]+') do
  i = i + 1
  if v == cur then
    if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
    local d = deltas[i]
    if d ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
      redis.call('HINCRBY', KEYS[2], ARGV[4], d)
    end
    return {1, cur}
  end
end
return {0, cur}
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


def _check_tally(max_bytes: int, field: str | None) -> None:
    if max_bytes and not field:
        raise ValueError("a byte budget needs a tally field to keep its running total in")


def _positive(limit: int) -> int:
    if limit < 1:
        raise ValueError("a page holds at least one member")
    return limit


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
                "lease_release_owned": _LUA_LEASE_RELEASE_OWNED,
                "lease_extend": _LUA_LEASE_EXTEND,
                "hupdate": _LUA_HUPDATE,
                "hincr": _LUA_HINCR,
                "hcas": _LUA_HCAS,
                "emit": _LUA_EMIT,
                "list_push": _LUA_LPUSH_CAPPED,
                "list_push_budget": _LUA_LPUSH_BUDGET,
                "index_add_counted": _LUA_INDEX_ADD_COUNTED,
                "hcas_counted": _LUA_HCAS_COUNTED,
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

    def hash_cas_counted(
        self,
        key: str,
        field: str,
        allowed: dict[str, int],
        mapping: dict[str, Any],
        *,
        counter: tuple[str, str],
    ) -> tuple[bool, str | None]:
        """:meth:`hash_cas`, and on success ``counter`` (a hash key and field) moves by
        ``allowed[old value]`` in the same atomic step (if that hash exists)."""
        args: list[Any] = [
            field,
            ",".join(allowed),
            ",".join(str(int(d)) for d in allowed.values()),
            counter[1],
        ]
        for f, v in mapping.items():
            args += [f, _enc(v)]
        return self._script("hcas_counted", [key, counter[0]], args, _hcas_result)

    def hash_get_many(self, keys: list[str]) -> list[dict[str, str] | None]:
        """Many hashes in one round trip (None for each that does not exist)."""
        commands = [("hgetall", self._k(key)) for key in keys]
        return self._do(
            lambda c: self._pipe(c, commands, transaction=False),
            lambda rows: [_decode_hash(row) for row in rows],
        )

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

    def lease_release_owned(self, key: str, owner_key: str, member: str) -> None:
        return self._script("lease_release_owned", [key, owner_key], [member], lambda _: None)

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

    def index_add_counted(
        self,
        key: str,
        member: str,
        score: float,
        ttl: float,
        *,
        limit: int,
        counter_key: str,
        deltas: dict[str, int],
    ) -> bool:
        """Add ``member`` unless the index holds ``limit`` members already; on a new member,
        move the counters of the hash ``counter_key`` by ``deltas``, atomically. Both keys
        get ``ttl``. True when the member is in the index afterwards."""
        args: list[Any] = [member, score, _ms(ttl), int(limit)]
        for f, d in deltas.items():
            args += [f, int(d)]
        return self._script("index_add_counted", [key, counter_key], args, bool)

    def index_range(self, key: str, *, offset: int, limit: int | None) -> list[str]:
        """Lowest scores first (oldest), one page; ``limit=None``: to the end."""
        stop = -1 if limit is None else offset + _positive(limit) - 1
        return self._call("zrange", self._k(key), offset, stop, shape=_decode_all)

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
        self,
        hash_key: str,
        list_key: str,
        *,
        payload: str,
        cap: int,
        buffered: bool,
        max_bytes: int = 0,
        tally_field: str = "",
    ) -> int | None:
        """Stamp the next ``seq``; a buffered event is kept, within ``cap`` entries and, when
        ``max_bytes`` is set, that many bytes (their total kept in ``tally_field``)."""
        _check_tally(max_bytes, tally_field)
        args = ["seq", "lost_upto", payload, cap, "1" if buffered else "0"]
        return self._script(
            "emit",
            [hash_key, list_key],
            [*args, int(max_bytes), tally_field],
            lambda out: None if out is None else int(out),
        )

    def buffer_read(self, list_key: str) -> list[tuple[int, str]]:
        return self._call("lrange", self._k(list_key), 0, -1, shape=_decode_buffer)

    # capped list ------------------------------------------------------------------------
    def list_push(
        self,
        key: str,
        item: str,
        *,
        cap: int,
        ttl: float,
        max_bytes: int = 0,
        tally: tuple[str, str] | None = None,
    ) -> int:
        """Append, keep the newest ``cap`` items and, with ``max_bytes``, at most that many
        bytes: their total is kept in ``tally`` (hash key, field), and nothing is written
        once that hash is gone (the answer is then 0). Returns the list's length."""
        if not max_bytes:
            return self._script("list_push", [key], [item, cap, _ms(ttl)], int)
        _check_tally(max_bytes, tally and tally[1])
        args = [item, cap, _ms(ttl), int(max_bytes), tally[1]]
        return self._script("list_push_budget", [key, tally[0]], args, int)

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
    """Primitives in this process's memory: one lock, every key with an expiry.

    Values are native Python structures in a dict of this object's own (Django's
    ``LocMemCache`` would free an expired entry only when it is read again, and it culls
    live entries when full). Every expiry written is also pushed on a heap, and each write
    frees up to ``SWEEP_BATCH`` entries that have expired since: expired state goes away
    whether or not anyone reads it again. The store holds at most ``LOCAL_STORE_MAX_ENTRIES``
    entries: past that, :meth:`hash_create` (a new session or task record) raises
    :class:`StoreFull`, and what is live is never dropped to make room.
    """

    local = True
    SWEEP_BATCH = 100

    def __init__(self, cache):
        self._cache = cache
        self._data: dict[str, list] = {}  # key -> [expires_at, value]
        self._expiry: list[tuple[float, str]] = []  # heap: (expires_at, key), may be stale
        self._time = time.time  # tests move it
        self._lock = threading.RLock()
        self._leases: dict[str, dict[str, float]] = {}
        self._ends: list[tuple[float, str, str]] = []  # heap: (lease end, set, member)
        self._owners: dict[str, str] = {}  # lease set -> the owner of its live leases

    def size(self) -> int:
        """Entries held in memory, expired ones not yet swept included."""
        with self._lock:
            return len(self._data)

    def _get(self, key: str):
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._time():
            del self._data[key]
            return None
        return entry[1]

    def _put(self, key: str, data, *, ttl: float | None = None, keep: bool = False) -> None:
        """Store ``data``; ``keep`` keeps the key's expiry (a new key gets ``ttl`` or 1 s)."""
        now = self._time()
        entry = self._data.get(key)
        if keep and entry is not None and entry[0] > now:
            entry[1] = data
        else:
            self._put_at(key, data, now + float(ttl or 1))
        self._sweep(now, self.SWEEP_BATCH)

    def _put_at(self, key: str, data, expires_at: float) -> None:
        entry = self._data.get(key)
        if entry is not None and entry[0] == expires_at:
            entry[1] = data
            return
        self._data[key] = [expires_at, data]
        heapq.heappush(self._expiry, (expires_at, key))

    def _sweep(self, now: float, budget: int) -> None:
        """Free up to ``budget`` expired entries (stale heap entries are only popped)."""
        heap, data = self._expiry, self._data
        while budget > 0 and heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry[0] <= now:
                del data[key]
                budget -= 1
        if len(heap) > 2 * len(data) + 1024:  # moved or deleted keys left stale entries
            self._expiry = [(entry[0], key) for key, entry in data.items()]
            heapq.heapify(self._expiry)

    def _make_room(self, key: str) -> None:
        if key in self._data:
            return
        limit = settings.LOCAL_STORE_MAX_ENTRIES
        if len(self._data) >= limit:
            self._sweep(self._time(), len(self._expiry))
            if len(self._data) >= limit:
                raise StoreFull(f"the embedded store holds {limit} entries")

    def hash_create(self, key: str, mapping: dict[str, Any], ttl: float) -> None:
        with self._lock:
            self._make_room(key)
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
            if self._get(key) is None:
                return None
            return max(0.0, self._data[key][0] - self._time())

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)  # its heap entry is stale now, and only popped

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

    def lease_release_owned(self, key: str, owner_key: str, member: str) -> None:
        self.lease_release(key, member)  # the owner tag lives with the set here

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

    def hash_get_many(self, keys: list[str]) -> list[dict[str, str] | None]:
        with self._lock:
            return [dict(d) if (d := self._get(k)) else None for k in keys]

    def hash_cas_counted(
        self,
        key: str,
        field: str,
        allowed: dict[str, int],
        mapping: dict[str, Any],
        *,
        counter: tuple[str, str],
    ) -> tuple[bool, str | None]:
        with self._lock:
            ok, cur = self.hash_cas(key, field, tuple(allowed), mapping)
            counts = self._get(counter[0]) if ok and allowed[cur] else None
            if counts is not None:
                counts[counter[1]] = str(int(counts.get(counter[1], 0)) + int(allowed[cur]))
            return ok, cur

    # Sorted indexes are native dicts in the same store (the task index holds every task),
    # with an expiry like any key.
    def index_add(
        self, key: str, member: str, score: float, ttl: float, *, drop_below: float | None = None
    ) -> None:
        with self._lock:
            index = self._index(key)
            if drop_below is not None and len(index) % 100 == 0:
                index = {m: sc for m, sc in index.items() if sc >= drop_below}
            index[member] = score
            self._put(key, index, ttl=ttl)

    def index_add_counted(
        self,
        key: str,
        member: str,
        score: float,
        ttl: float,
        *,
        limit: int,
        counter_key: str,
        deltas: dict[str, int],
    ) -> bool:
        with self._lock:
            index = self._index(key)
            if member in index:
                return True
            if len(index) >= limit:
                return False
            index[member] = score
            self._put(key, index, ttl=ttl)
            counts = self._get(counter_key) or {}
            for f, d in deltas.items():
                counts[f] = str(int(counts.get(f, 0)) + int(d))
            self._put(counter_key, counts, ttl=ttl)
            return True

    def _index(self, key: str) -> dict[str, float]:
        index = self._get(key)
        return index if index is not None else {}

    def index_range(self, key: str, *, offset: int, limit: int | None) -> list[str]:
        with self._lock:
            index = self._index(key)
            rows = sorted(index, key=lambda m: (index[m], m))
            return rows[offset : None if limit is None else offset + _positive(limit)]

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
        self,
        hash_key: str,
        list_key: str,
        *,
        payload: str,
        cap: int,
        buffered: bool,
        max_bytes: int = 0,
        tally_field: str = "",
    ) -> int | None:
        _check_tally(max_bytes, tally_field)
        with self._lock:
            data = self._get(hash_key)
            if data is None:
                return None
            seq = int(data.get("seq", 0)) + 1
            data["seq"] = str(seq)
            if buffered:
                items = self._get(list_key) or []
                items.append((seq, payload))
                size = int(data.get(tally_field, 0)) + _size(seq, payload) if max_bytes else 0
                lost = None
                while items and (len(items) > cap or (max_bytes and size > max_bytes)):
                    lost = items.pop(0)
                    size -= _size(*lost) if max_bytes else 0
                if max_bytes:
                    data[tally_field] = str(size if items else 0)
                if lost is not None:
                    data["lost_upto"] = str(lost[0])
                self._put_at(list_key, items, self._data[hash_key][0])
            self._put(hash_key, data, keep=True)
            return seq

    def buffer_read(self, list_key: str) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._get(list_key) or [])

    def list_push(
        self,
        key: str,
        item: str,
        *,
        cap: int,
        ttl: float,
        max_bytes: int = 0,
        tally: tuple[str, str] | None = None,
    ) -> int:
        if max_bytes:
            _check_tally(max_bytes, tally and tally[1])
        with self._lock:
            if not max_bytes:
                items = (self._get(key) or [])[-(cap - 1) :] if cap > 1 else []
                items.append(item)
                self._put(key, items, ttl=ttl)
                return len(items)
            counts = self._get(tally[0])
            if counts is None:
                return 0
            items = self._get(key) or []
            items.append(item)
            size = int(counts.get(tally[1], 0)) + _size(item)
            while items and (len(items) > cap or size > max_bytes):
                size -= _size(items.pop(0))
            counts[tally[1]] = str(size if items else 0)
            self._put(key, items, ttl=ttl)
            return len(items)

    def list_read(self, key: str) -> list[str]:
        with self._lock:
            return list(self._get(key) or [])

    def ping(self) -> bool:
        return True


def _size(*parts) -> int:
    """Bytes of a stored item as Redis counts them: ``"<seq> <payload>"`` or the item."""
    if len(parts) == 2:
        return len(str(parts[0])) + 1 + len(parts[1].encode())
    return len(parts[0].encode())


def _enc(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _wrap(exc: Exception) -> Exception:
    import redis

    from core.metrics import REDIS_ERRORS

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
