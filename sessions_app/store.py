"""Every cache key and TTL of a voice session. Nothing else touches session state.

Keys (under the cache's ``KEY_PREFIX``):

* ``s:<id>``       hash: the session record, its counters, ``seq``, ``conn_gen``, ``lost_upto``,
  and the bytes held by its replay buffer (``ev_bytes``) and its messages (``msg_bytes``)
* ``s:<id>:ev``    list: the replay buffer, ``"<seq> <sealed event>"``, capped in entries
  (``EVENT_BUFFER_SIZE``) and bytes (``EVENT_BUFFER_BYTES``)
* ``s:<id>:msg``   list: sealed messages (user utterances and replies), capped in entries
  (``MESSAGE_HISTORY_SIZE``) and bytes (``MESSAGE_HISTORY_BYTES``)
* ``ns:<sha>:live`` sorted set: live sessions of one namespace, scored by lease end
* ``ns:<sha>:key``  the keyed hash of the key hash those live sessions share (as long as the set)
* ``tok:<nonce>``  a used connect token (set-if-absent makes tokens one-time)
* ``rate:create:<keyed hash of a client>`` sorted set: that client's recent creates, each
  leased for the create rate's period (``SESSION_CREATE_RATE``)
* ``live``         sorted set: every live session, scored by lease end (operators' listing
  and metrics page through it; nobody scans keys)

TTLs: a new session lives ``CONNECT_WINDOW_SECONDS`` until its first connect, which extends it
to ``SESSION_TTL_HOURS`` from creation. The lease in the namespace set has the same end, so an
abandoned or expired session stops counting toward the limit at once, with no sweeper.
The namespace id is hashed in its key, so key names reveal no namespace.
"""

import hashlib

from django.conf import settings

from core.crypto import seal, unseal
from core.kv import aget_kv
from core.sync import blocking


def _key(*parts: str) -> str:
    return ":".join(parts)


def _session_key(session_id: str) -> str:
    return _key("s", session_id)


def _namespace_key(namespace_id: str, part: str = "live") -> str:
    # Unkeyed, so that key names outlive a SECRET_KEY rotation: a short, guessable namespace
    # id ("user-42") can be found from its hash by trying ids; clients should use ids that
    # are not guessable (docs/api.md).
    digest = hashlib.sha256(namespace_id.encode()).hexdigest()[:32]
    return _key("ns", digest, part)


def session_ttl() -> float:
    return settings.SESSION_TTL_HOURS * 3600


def connect_window() -> float:
    return settings.CONNECT_WINDOW_SECONDS


# session record ---------------------------------------------------------------------------
async def asession_put(*, session_id: str, record: dict, ttl: float) -> None:
    """Write a new session record; its namespace id is sealed like everything users send."""
    await aget_kv().hash_create(_session_key(session_id), _sealed(session_id, record), ttl)


def _sealed(session_id: str, record: dict) -> dict:
    return {**record, "namespace_id": seal(session_id, record["namespace_id"])}


def _unsealed(session_id: str, record: dict | None) -> dict | None:
    if record is not None and "namespace_id" in record:
        record["namespace_id"] = unseal(session_id, record["namespace_id"])
    return record


async def asession_get(*, session_id: str) -> dict | None:
    return _unsealed(session_id, await aget_kv().hash_get(_session_key(session_id)))


async def asession_get_with(
    *, session_id: str, fields: list[tuple[str, str]]
) -> tuple[dict | None, list[str | None]]:
    """The record and one field of each of some other hashes (key, field), in one round trip."""
    record, values = await aget_kv().hash_get_with(_session_key(session_id), fields)
    return _unsealed(session_id, record), values


async def asession_update(*, session_id: str, fields: dict) -> bool:
    """Change fields of a session that still exists; never resurrects a closed one."""
    return await aget_kv().hash_update(_session_key(session_id), fields)


async def asession_update_if_current(*, session_id: str, conn_gen: int, fields: dict) -> bool:
    """Change fields only while ``conn_gen`` is the session's newest connection (atomic)."""
    key = _session_key(session_id)
    ok, _ = await aget_kv().hash_cas(key, "conn_gen", (str(conn_gen),), fields)
    return ok


async def asession_incr(*, session_id: str, deltas: dict[str, int]) -> dict[str, int] | None:
    return await aget_kv().hash_incr(_session_key(session_id), deltas)


async def asession_extend(*, session_id: str, ttl: float) -> None:
    kv = aget_kv()
    for key in (_session_key(session_id), _key("s", session_id, "ev")):
        await kv.expire(key, ttl)


async def asession_delete(*, session_id: str) -> None:
    sk = _session_key(session_id)
    await aget_kv().delete(sk, _key(sk, "ev"), _key(sk, "msg"))


# namespace slots ----------------------------------------------------------------------------
SLOT_TAKEN, SLOT_FULL, SLOT_OTHER_KEY, SLOT_THROTTLED = 1, 0, -1, -2


def _slot(namespace_id: str, session_id: str, key_tag: str, earlier_tags, now, until) -> dict:
    return {
        "key": _namespace_key(namespace_id),
        "owner_key": _namespace_key(namespace_id, "key"),
        "member": session_id,
        "owner": key_tag,
        "also": tuple(earlier_tags),
        "limit": settings.MAX_SESSIONS_PER_USER,
        "now": now,
        "until": until,
        "ttl": session_ttl(),
    }


async def aslot_acquire(
    *,
    namespace_id: str,
    session_id: str,
    key_tag: str,
    now: float,
    until: float,
    earlier_tags: tuple[str, ...] = (),
) -> int:
    """Take one of the namespace's ``MAX_SESSIONS_PER_USER`` slots, atomically.

    ``key_tag`` is the keyed hash of the session's key hash: while the namespace has live
    sessions, only the same tag may take a slot (``SLOT_OTHER_KEY`` otherwise); once none is
    live, the next create sets it. Returns ``SLOT_TAKEN``, ``SLOT_FULL`` or ``SLOT_OTHER_KEY``.
    """
    slot = _slot(namespace_id, session_id, key_tag, earlier_tags, now, until)
    key, owner_key, member = slot.pop("key"), slot.pop("owner_key"), slot.pop("member")
    return await aget_kv().lease_acquire_owned(key, owner_key, member, **slot)


async def asession_open(
    *,
    session_id: str,
    record: dict,
    key_tag: str,
    now: float,
    until: float,
    earlier_tags: tuple[str, ...] = (),
    client: tuple[str, int, float] | None = None,
) -> tuple[int, float | None]:
    """A new session in one atomic step (one round trip on Redis): count the attempt against
    its client's create rate, take a slot of its namespace (as :func:`aslot_acquire`), and
    only then write its record, to live until ``until``, and list it among the live
    sessions.

    ``client`` is the client's identity (a keyed hash), the creates it may make, and the
    period in seconds. Returns what ``aslot_acquire`` does and None, or ``SLOT_THROTTLED`` and
    the time the client's next attempt may count again.
    """
    slot = _slot(record["namespace_id"], session_id, key_tag, earlier_tags, now, until)
    rate = None
    if client is not None:
        ident, limit, period = client
        rate = (_key("rate", "create", ident), f"{session_id}", limit, period)
    return await aget_kv().lease_acquire_create(
        **slot,
        hash_key=_session_key(session_id),
        mapping=_sealed(session_id, record),
        hash_ttl=until - now,
        index_key=_LIVE_KEY,
        rate=rate,
    )


async def aslot_extend(*, namespace_id: str, session_id: str, until: float) -> bool:
    return await aget_kv().lease_extend(
        _namespace_key(namespace_id), session_id, until=until, ttl=session_ttl()
    )


async def aslot_release(*, namespace_id: str, session_id: str) -> None:
    """Give the slot back; the namespace's key tag goes with its last live session."""
    await aget_kv().lease_release_owned(
        _namespace_key(namespace_id), _namespace_key(namespace_id, "key"), session_id
    )


# the index of live sessions -------------------------------------------------------------------
_LIVE_KEY = "live"
_NO_LIMIT = 2**62


async def alive_add(*, session_id: str, now: float, until: float) -> None:
    """List a session (or move its end); ended ones are dropped on the way."""
    await aget_kv().lease_acquire(
        _LIVE_KEY, session_id, limit=_NO_LIMIT, now=now, until=until, ttl=session_ttl()
    )


async def alive_remove(*, session_id: str) -> None:
    await aget_kv().lease_release(_LIVE_KEY, session_id)


async def alive_count(*, now: float) -> int:
    return await aget_kv().lease_count(_LIVE_KEY, now=now)


async def alive_page(*, now: float, offset: int, limit: int) -> list[str]:
    return await aget_kv().lease_members(_LIVE_KEY, now=now, offset=offset, limit=limit)


async def asession_statuses(*, session_ids: list[str]) -> list[str | None]:
    return await aget_kv().hash_fields([_session_key(s) for s in session_ids], "status")


# connect tokens -------------------------------------------------------------------------------
async def atoken_claim(*, nonce: str) -> bool:
    """True the first time a token's nonce is used, False on every replay."""
    return await aget_kv().claim(_key("tok", nonce), connect_window() + 5)


# events and messages ----------------------------------------------------------------------------
async def aevent_append(*, session_id: str, payload: str, buffered: bool) -> int | None:
    """Next ``seq`` of the session (None when it is gone); buffered events are kept for resume."""
    sk = _session_key(session_id)
    return await aget_kv().emit(
        sk,
        _key(sk, "ev"),
        payload=payload,
        cap=settings.EVENT_BUFFER_SIZE,
        buffered=buffered,
        max_bytes=settings.EVENT_BUFFER_BYTES,
        tally_field="ev_bytes",
        seq_field="seq",
        lost_field="lost_upto",
    )


async def aevents_read(*, session_id: str) -> list[tuple[int, str]]:
    return await aget_kv().buffer_read(_key(_session_key(session_id), "ev"))


async def amessage_append(*, session_id: str, item: str) -> None:
    sk = _session_key(session_id)
    kv = aget_kv()
    ttl = await kv.ttl(sk) or 1
    await kv.list_push(
        _key(sk, "msg"),
        item,
        cap=settings.MESSAGE_HISTORY_SIZE,
        ttl=ttl,
        max_bytes=settings.MESSAGE_HISTORY_BYTES,
        tally=(sk, "msg_bytes"),
    )


async def amessages_read(*, session_id: str) -> list[str]:
    return await aget_kv().list_read(_key(_session_key(session_id), "msg"))


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, tests --------
session_put = blocking(asession_put)
session_get = blocking(asession_get)
session_update = blocking(asession_update)
session_update_if_current = blocking(asession_update_if_current)
session_incr = blocking(asession_incr)
session_extend = blocking(asession_extend)
session_delete = blocking(asession_delete)
slot_acquire = blocking(aslot_acquire)
slot_extend = blocking(aslot_extend)
slot_release = blocking(aslot_release)
live_add = blocking(alive_add)
live_remove = blocking(alive_remove)
live_count = blocking(alive_count)
live_page = blocking(alive_page)
session_statuses = blocking(asession_statuses)
token_claim = blocking(atoken_claim)
event_append = blocking(aevent_append)
events_read = blocking(aevents_read)
message_append = blocking(amessage_append)
messages_read = blocking(amessages_read)
