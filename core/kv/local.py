"""The embedded store: one process, one lock, dicts of its own with an expiry heap and a
capacity. It answers every primitive exactly as :mod:`core.kv.redis` does (a parity test runs
both), without a server.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any

from django.conf import settings

from core.kv.common import StoreFull, _check_tally, _enc, _positive, _size


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
                self._leases.pop(k, None)  # a lease set is a key too, as on Redis
                self._owners.pop(k, None)

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
        also: tuple[str, ...] = (),
    ) -> int:
        # The owner tag is kept with the set itself here (``owner_key`` names it on Redis).
        with self._lock:
            leases = self._lease_set(key)
            for m in [m for m, t in leases.items() if t <= now]:
                del leases[m]
            current = self._owners.get(key)
            if leases and current is not None and current not in (owner, *also):
                return -1
            if len(leases) >= limit:
                return 0
            self._lease_write(leases, key, member, until)
            self._owners[key] = owner
            self._drop_ended(now)
            return 1

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
        hash ``hash_key`` (:meth:`hash_create`) and add ``member`` to the lease set
        ``index_key`` (no limit) until ``until``. ``rate`` as on Redis: checked first, and
        ``(-2, the soonest end)`` while full. Raises ``StoreFull`` before taking anything
        when the hash would not fit."""
        with self._lock:
            self._make_room(hash_key)
            if rate is not None:
                rate_key, rate_member, rate_limit, period = rate
                if not self.lease_acquire(
                    rate_key, rate_member, limit=rate_limit, now=now, until=now + period,
                    ttl=period,
                ):  # fmt: skip
                    return -2, min(t for t in self._leases[rate_key].values() if t > now)
            got = self.lease_acquire_owned(
                key, owner_key, member, owner=owner, limit=limit, now=now, until=until,
                ttl=ttl, also=also,
            )  # fmt: skip
            if got == 1:
                self.hash_create(hash_key, mapping, hash_ttl)
                self.lease_acquire(index_key, member, limit=2**62, now=now, until=until, ttl=ttl)
            return got, None

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

    def hash_get_with(
        self, key: str, fields: list[tuple[str, str]]
    ) -> tuple[dict[str, str] | None, list[str | None]]:
        with self._lock:
            return self.hash_get(key), [self.hash_fields([k], f)[0] for k, f in fields]

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
        seq_field: str,
        lost_field: str,
    ) -> int | None:
        _check_tally(max_bytes, tally_field)
        with self._lock:
            data = self._get(hash_key)
            if data is None:
                return None
            seq = int(data.get(seq_field, 0)) + 1
            data[seq_field] = str(seq)
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
                    data[lost_field] = str(lost[0])
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
