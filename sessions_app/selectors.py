"""Reads of voice sessions."""

import json

from django.conf import settings

from core import clock
from core.crypto import unseal
from core.sync import blocking
from sessions_app import store
from tasks_app import store as task_store

SOCKET_STATUSES = ("connected", "listening", "processing")


async def asession_get(*, session_id: str) -> dict | None:
    """The session record with typed fields, or None if there is no live session.

    A session past its life reads as ``closed`` in the instant before its keys expire.
    """
    return _typed(await store.asession_get(session_id=session_id))


def _typed(record: dict | None) -> dict | None:
    if record is None:
        return None
    for field in ("created_at", "expires_at"):
        record[field] = float(record[field])
    for field in (
        "seq",
        "conn_gen",
        "message_count",
        "audio_chunks_received",
        "audio_chunks_processed",
    ):
        record[field] = int(record.get(field) or 0)
    now = clock.now()
    if record["expires_at"] <= now:
        record["status"] = "closed"
    elif record["status"] in SOCKET_STATUSES and (
        now - float(record.get("socket_seen") or 0) > 3 * settings.SOCKET_ALIVE_SECONDS
    ):
        record["status"] = "created"  # its worker died without a goodbye: awaiting a reconnect
    return record


async def asession_get_with_pending(*, session_id: str) -> tuple[dict | None, int]:
    """:func:`asession_get` and the session's pending task count, in one round trip."""
    record, (pending,) = await store.asession_get_with(
        session_id=session_id, fields=[task_store.pending_count_field(session_id=session_id)]
    )
    return _typed(record), task_store.pending_count_of(pending)


async def asession_stats(*, session_id: str) -> dict | None:
    """Aggregate counts only: no PII, no text."""
    record, pending = await asession_get_with_pending(session_id=session_id)
    if record is None:
        return None
    return _stats(record, pending)


def _stats(record: dict, pending_tasks: int) -> dict:
    return {
        "session_id_truncated": record["id"][:8],
        "status": record["status"],
        "age_seconds": round(max(0.0, clock.now() - record["created_at"]), 3),
        "message_count": record["message_count"],
        "pending_tasks_count": pending_tasks,
        "audio_chunks_received": record["audio_chunks_received"],
        "audio_chunks_processed": record["audio_chunks_processed"],
        "device_type": record["device_type"],
    }


async def asession_replay(*, session_id: str, after_seq: int) -> tuple[list[dict], bool]:
    """Buffered events with ``seq > after_seq``, and whether some of them were lost."""
    record = await store.asession_get(session_id=session_id)
    if record is None:
        return [], False
    lost_upto = int(record.get("lost_upto") or 0)
    events = [
        {**json.loads(unseal(session_id, payload)), "seq": seq}
        for seq, payload in await store.aevents_read(session_id=session_id)
        if seq > after_seq
    ]
    return events, lost_upto > after_seq


async def asession_list(*, offset: int = 0, limit: int = 50) -> tuple[int, list[dict]]:
    """Live sessions, soonest end first, one page of them, with the total (operators)."""
    now = clock.now()
    ids = await store.alive_page(now=now, offset=offset, limit=limit)
    rows = [await asession_get(session_id=s) for s in ids]
    return await store.alive_count(now=now), [r for r in rows if r is not None]


async def asession_status_counts() -> dict[str, int]:
    """How many live sessions are in each status (metrics): one pipelined read per page."""
    counts: dict[str, int] = {}
    now = clock.now()
    offset, page = 0, 1000
    while True:
        ids = await store.alive_page(now=now, offset=offset, limit=page)
        for status in await store.asession_statuses(session_ids=ids):
            if status is not None:
                counts[status] = counts.get(status, 0) + 1
        if len(ids) < page:
            return counts
        offset += page


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, metrics ---
session_get = blocking(asession_get)
session_get_with_pending = blocking(asession_get_with_pending)
session_stats = blocking(asession_stats)
session_replay = blocking(asession_replay)
session_list = blocking(asession_list)
session_status_counts = blocking(asession_status_counts)
