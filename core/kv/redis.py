"""The Redis (or Valkey) store: each read-modify-write that could race across workers is one
Lua script, atomic on the server. :class:`AsyncRedisKV` runs the same steps on an asyncio
client. It knows no key, no TTL and no field of the apps: the stores pass them all.
"""

from __future__ import annotations

from typing import Any

from core.kv.common import KVUnavailable, _check_tally, _enc, _positive

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
# owner, then other spellings of the same owner (its tag under an earlier key), if any.
# As above, and the live leases of a set share one owner: while any is live, another owner is
# refused (-1); once none is, the next acquire sets the owner. The tag lives as long as the
# set. Returns 1 (acquired), 0 (full) or -1 (another owner holds the set).
_LUA_LEASE_ACQUIRE_OWNED = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local cur = redis.call('GET', KEYS[2])
if n > 0 and cur and cur ~= ARGV[6] then
  local known = false
  for i = 7, #ARGV do if cur == ARGV[i] then known = true end end
  if not known then return -1 end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], ARGV[6], 'PX', redis.call('PTTL', KEYS[1]))
return 1
"""

# KEYS[1] lease zset, KEYS[2] its owner tag, KEYS[3] a new hash, KEYS[4] an index zset, and
# KEYS[5] a rate zset when there is one. ARGV: member, limit, now, until, ttl_ms, owner,
# hash_ttl_ms, n (other spellings of the owner), rate member, rate limit, rate until, rate
# ttl_ms, those n spellings, then the hash's field/value pairs.
# First the rate: a lease per attempt until ``rate until``; with ``rate limit`` live already
# it answers {-2, the soonest of their ends} and writes nothing. Then
# _LUA_LEASE_ACQUIRE_OWNED, and on success, in the same step: the hash is created anew with
# its TTL, and the member is added to the index until ``until`` (its ended members dropped).
# One round trip for all that creating a session takes. Returns {1}, {0} or {-1} as that
# script does, or {-2, end}.
_LUA_LEASE_ACQUIRE_CREATE = """
if #KEYS >= 5 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[10]) then
    local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
    return {-2, first[2]}
  end
  redis.call('ZADD', KEYS[5], ARGV[11], ARGV[9])
  local rttl = tonumber(ARGV[12])
  if redis.call('PTTL', KEYS[5]) < rttl then redis.call('PEXPIRE', KEYS[5], rttl) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local cur = redis.call('GET', KEYS[2])
local nalso = tonumber(ARGV[8])
if n > 0 and cur and cur ~= ARGV[6] then
  local known = false
  for i = 13, 12 + nalso do if cur == ARGV[i] then known = true end end
  if not known then return {-1} end
end
if n >= tonumber(ARGV[2]) then return {0} end
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], ARGV[6], 'PX', redis.call('PTTL', KEYS[1]))
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 13 + nalso))
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
if redis.call('PTTL', KEYS[4]) < ttl then redis.call('PEXPIRE', KEYS[4], ttl) end
return {1}
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
                "lease_acquire_create": _LUA_LEASE_ACQUIRE_CREATE,
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

    def hash_get_with(
        self, key: str, fields: list[tuple[str, str]]
    ) -> tuple[dict[str, str] | None, list[str | None]]:
        """A hash and one field of each of some other hashes (key, field), in one round
        trip: a record and the counts kept beside it."""
        commands = [("hgetall", self._k(key))] + [("hget", self._k(k), f) for k, f in fields]
        return self._do(
            lambda c: self._pipe(c, commands, transaction=False),
            lambda rows: (_decode_hash(rows[0]), _decode_or_none(rows[1:])),
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
        also: tuple[str, ...] = (),
    ) -> int:
        return self._script(
            "lease_acquire_owned",
            [key, owner_key],
            [member, limit, now, until, _ms(ttl), owner, *also],
            int,
        )

    def lease_acquire_create(
        self,
        *,
        key: str,
        owner_key: str,
        member: str,
        owner: str,
        limit: int,
        now: float,
        until: float,
        ttl: float,
        also: tuple[str, ...] = (),
        hash_key: str,
        mapping: dict[str, Any],
        hash_ttl: float,
        index_key: str,
        rate: tuple[str, str, int, float] | None = None,
    ) -> tuple[int, float | None]:
        """:meth:`lease_acquire_owned`; on success (1), in the same atomic step, create the
        hash ``hash_key`` (as :meth:`hash_create`) and add ``member`` to the lease set
        ``index_key`` (no limit) until ``until``: one round trip.

        ``rate`` (a lease set's key, a member, a limit and a period) is checked first: one
        lease per call for the period, refused with ``(-2, the soonest end)`` while
        ``limit`` are live, and then nothing is written. Else ``(1 | 0 | -1, None)``."""
        keys = [key, owner_key, hash_key, index_key]
        rate_args: list[Any] = ["", 0, 0, 0]
        if rate is not None:
            rate_key, rate_member, rate_limit, period = rate
            keys.append(rate_key)
            rate_args = [rate_member, int(rate_limit), now + period, _ms(period)]
        args: list[Any] = [member, limit, now, until, _ms(ttl), owner, _ms(hash_ttl), len(also)]
        args += rate_args + list(also)
        for f, v in mapping.items():
            args += [f, _enc(v)]

        def shape(out):
            return int(out[0]), (float(out[1]) if len(out) > 1 else None)

        return self._script("lease_acquire_create", keys, args, shape)

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
        seq_field: str,
        lost_field: str,
    ) -> int | None:
        """Stamp the next number in the hash's ``seq_field``; a buffered event is kept, within
        ``cap`` entries and, when ``max_bytes`` is set, that many bytes (their total kept in
        ``tally_field``); the highest number that fell out is kept in ``lost_field``."""
        _check_tally(max_bytes, tally_field)
        args = [seq_field, lost_field, payload, cap, "1" if buffered else "0"]
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


def _wrap(exc: Exception) -> Exception:
    import redis

    from core.metrics import REDIS_ERRORS

    if isinstance(exc, redis.RedisError | OSError):
        REDIS_ERRORS.inc()
        return KVUnavailable(type(exc).__name__)
    return exc
