"""Writes to voice sessions. Every change that sockets must see goes through here.

:func:`session_aemit` is the one event path: it gives an event the session's next ``seq``,
keeps it in the replay buffer, and sends it to the session's group, so a consumer on any worker
forwards it.

Every service here is ``async def`` and awaits the store (the asyncio Redis client, or plain
dict calls on local memory). Code off the event loop uses the sync entries at the bottom, made
by ``core.sync.blocking``, the one way across.
"""

import json
import re
import uuid
from urllib.parse import urlencode

import structlog
from channels.layers import get_channel_layer
from django.conf import settings

from core import clock
from core.access import keyed_hash, keyed_hash_earlier, session_token_issue
from core.crypto import seal
from core.sync import blocking
from sessions_app import store
from sessions_app.errors import ConnectRefused, CreateThrottled, InvalidKeyHash, TooManySessions
from sessions_app.tokens import TokenInvalid, token_issue, token_verify
from tasks_app import store as task_store

logger = structlog.get_logger(__name__)

KEY_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")  # fullmatch: "$" would allow a final newline
LIVE_STATUSES = ("created", "connected", "listening", "processing")
CLOSED_STATUSES = ("closed", "error")


def group_name(session_id: str) -> str:
    """The channel-layer group of a session's sockets (passes Channels' name regex)."""
    return "voice-session." + uuid.UUID(session_id).hex


# create ---------------------------------------------------------------------------------------
async def asession_create(
    *,
    namespace_id: str,
    key_hash: str,
    device_type: str,
    client_version: str | None,
    timezone: str = "UTC",
    intents: bool = True,
    client: tuple[str, int, float] | None = None,
) -> dict:
    """Create a session in a free slot of its namespace, or refuse (401, 429).

    ``client`` counts the create against its client's rate: the client's identity (a keyed
    hash), the creates it may make, and the period in seconds (429 past it). The rate, the
    slot, the record and the live index are one atomic step (one round trip on Redis).
    The answer carries the session's bearer token (``session_token``), which is stored
    nowhere and shown only here. The namespace's live sessions share one key hash; the
    store keeps a keyed hash of it, never the key hash itself.
    """
    if settings.ENCRYPTION_ENABLED and not KEY_HASH_RE.fullmatch(key_hash):
        logger.warning("session_key_hash_invalid")
        raise InvalidKeyHash()
    session_id = str(uuid.uuid4())
    now = clock.now()
    expires_at = now + store.session_ttl()
    key_tag = keyed_hash("namespace-key", namespace_id, key_hash)
    record = {
        "id": session_id,
        "namespace_id": namespace_id,
        "status": "created",
        "created_at": now,
        "expires_at": expires_at,
        "connected_at": "",
        "device_type": device_type,
        "client_version": client_version or "",
        "key_tag": key_tag,
        "timezone": timezone,
        # "off": final transcripts are not turned into intents and tasks (transcription only,
        # as the OpenAI-Realtime dialect's clients expect); see ConversationRuntime.final.
        "intents": "on" if intents else "off",
        "seq": 0,
        "conn_gen": 0,
        "message_count": 0,
        "audio_chunks_received": 0,
        "audio_chunks_processed": 0,
    }
    slot, retry_at = await store.asession_open(
        session_id=session_id,
        record=record,
        key_tag=key_tag,
        earlier_tags=keyed_hash_earlier("namespace-key", namespace_id, key_hash),
        now=now,
        until=now + store.connect_window(),
        client=client,
    )
    if slot == store.SLOT_THROTTLED:
        logger.info("session_create_throttled", device_type=device_type)
        raise CreateThrottled(wait=max(0.0, (retry_at or now) - now))
    if slot == store.SLOT_OTHER_KEY:
        logger.warning("session_key_hash_not_the_namespaces", device_type=device_type)
        raise InvalidKeyHash()
    if slot != store.SLOT_TAKEN:
        logger.info("session_limit_reached", device_type=device_type)
        raise TooManySessions()
    logger.info("session_created", session_id=session_id, device_type=device_type)
    return {**record, "session_token": session_token_issue(session_id=session_id)}


def session_connect_url(*, session_id: str, host: str, secure: bool) -> str:
    """A ``ws(s)://`` URL with a fresh one-time token: every GET hands out a new one."""
    query = urlencode({"session_id": session_id, "token": token_issue(session_id=session_id)})
    return f"{'wss' if secure else 'ws'}://{host}/ws/voice?{query}"


# connect --------------------------------------------------------------------------------------
async def asession_connect(*, session_id: str, token: str, holder: bool = False) -> dict:
    """Attach a socket: check the token, claim it once, take over the session.

    Returns the session record with ``conn_gen``, the generation of this connection: a newer
    socket has a higher one, and older sockets close with 4409 when they hear of it.
    ``holder=True``: the caller has already checked the session's bearer token (a dialect that
    authenticates with it, such as ``/v1/realtime``), so there is no connect token to claim.
    """
    nonce = ""
    if not holder:
        try:
            nonce = token_verify(token=token, session_id=session_id)
        except TokenInvalid as exc:
            raise ConnectRefused(4401, f"token {exc}") from exc
    record = await store.asession_get(session_id=session_id)
    if record is None or record["status"] in CLOSED_STATUSES:
        raise ConnectRefused(4404, "session not found")
    if not holder and not await store.atoken_claim(nonce=nonce):
        raise ConnectRefused(4401, "token already used")
    counters = await store.asession_incr(session_id=session_id, deltas={"conn_gen": 1})
    if counters is None:
        raise ConnectRefused(4404, "session not found")
    now = clock.now()
    fields = {"status": "connected", "socket_seen": now}
    if not record["connected_at"]:
        expires_at = float(record["expires_at"])
        held = (
            await store.aslot_extend(
                namespace_id=record["namespace_id"], session_id=session_id, until=expires_at
            )
            or await store.aslot_acquire(
                namespace_id=record["namespace_id"],
                session_id=session_id,
                key_tag=record.get("key_tag", ""),
                now=now,
                until=expires_at,
            )
            == store.SLOT_TAKEN
        )
        if not held:
            await _close_prepare(session_id, "abandoned")  # never connected: no socket to tell
            raise ConnectRefused(4404, "session not found")
        await store.asession_extend(session_id=session_id, ttl=max(1.0, expires_at - now))
        await store.alive_add(session_id=session_id, now=now, until=expires_at)
        fields["connected_at"] = now
    await store.asession_update(session_id=session_id, fields=fields)
    record = await store.asession_get(session_id=session_id)
    if record is None:
        raise ConnectRefused(4404, "session not found")
    record["conn_gen"] = counters["conn_gen"]
    logger.info("session_connected", session_id=session_id, conn_gen=counters["conn_gen"])
    return record


async def asession_set_status(*, session_id: str, status: str, conn_gen: int) -> bool:
    """Record what the session's socket is doing, if that socket is still the current one.

    The guard on ``conn_gen`` is atomic: a replaced socket never overwrites the status that
    its successor set.
    """
    return await store.asession_update_if_current(
        session_id=session_id, conn_gen=conn_gen, fields={"status": status}
    )


async def asession_socket_alive(*, session_id: str, conn_gen: int, now: float) -> bool:
    """The current socket is still there (sent every ``SOCKET_ALIVE_SECONDS``)."""
    return await store.asession_update_if_current(
        session_id=session_id, conn_gen=conn_gen, fields={"socket_seen": now}
    )


async def asession_set_timezone(*, session_id: str, timezone: str) -> bool:
    """The session's IANA time zone: times are read and spoken in it (CONTRACT 2a)."""
    return await store.asession_update(session_id=session_id, fields={"timezone": timezone})


async def asession_detach(*, session_id: str, conn_gen: int) -> bool:
    """The current socket went away: the session waits (``created``) for a reconnect.

    The same atomic step retires the socket's generation (``conn_gen`` + 1), so a status
    write that the gone socket still had in flight (a step finishing after the socket was
    cancelled) is refused rather than overwriting ``created``. A reconnect takes a newer
    generation still.
    """
    return await store.asession_update_if_current(
        session_id=session_id,
        conn_gen=conn_gen,
        fields={"status": "created", "conn_gen": conn_gen + 1},
    )


async def asession_counters_add(*, session_id: str, deltas: dict[str, int]) -> None:
    """Add a batch of counts (flushed by a socket every tick, never per frame)."""
    await store.asession_incr(session_id=session_id, deltas=deltas)


async def asession_message_add(*, session_id: str, role: str, text: str) -> None:
    """Keep a message (sealed) in the session's history and count it."""
    item = seal(session_id, json.dumps({"role": role, "text": text, "at": clock.now()}))
    await store.amessage_append(session_id=session_id, item=item)
    await store.asession_incr(session_id=session_id, deltas={"message_count": 1})


# events ---------------------------------------------------------------------------------------
async def _event_stamp(session_id: str, event: dict, buffered: bool) -> dict | None:
    payload = seal(session_id, json.dumps(event, separators=(",", ":")))
    seq = await store.aevent_append(session_id=session_id, payload=payload, buffered=buffered)
    return None if seq is None else {**event, "seq": seq}


def _group_message(event: dict) -> dict:
    return {"type": "session.event", "event": event}


async def session_aemit(*, session_id: str, event: dict, broadcast: bool = True) -> dict | None:
    """Give ``event`` the next seq and send it to every socket of the session.

    With ``broadcast=False`` the event is for the calling socket only (``session.ready``,
    ``pong``, ``error``): it gets a seq but is neither buffered nor sent; the caller sends it.
    Returns None when the session no longer exists.
    """
    out = await _event_stamp(session_id, event, broadcast)
    if out is not None and broadcast:
        await get_channel_layer().group_send(group_name(session_id), _group_message(out))
    return out


async def session_announce_takeover(*, session_id: str, conn_gen: int) -> None:
    """Tell older sockets of the session, on any worker, that they are replaced."""
    await get_channel_layer().group_send(
        group_name(session_id), {"type": "session.takeover", "conn_gen": conn_gen}
    )


# close ----------------------------------------------------------------------------------------
async def _close_prepare(session_id: str, reason: str) -> dict | None:
    """Stamp ``session.closed`` and discard the session's state; the event is still to send."""
    record = await store.asession_get(session_id=session_id)
    if record is None:
        return None
    event = await _event_stamp(session_id, {"type": "session.closed", "reason": reason}, True)
    await store.asession_delete(session_id=session_id)
    await store.aslot_release(namespace_id=record["namespace_id"], session_id=session_id)
    await store.alive_remove(session_id=session_id)
    await task_store.asession_index_forget(session_id=session_id)
    logger.info("session_closed", session_id=session_id, reason=reason)
    return event or {"type": "session.closed", "reason": reason, "seq": int(record["seq"]) + 1}


async def session_aclose(*, session_id: str, reason: str) -> bool:
    """Close a session (DELETE, ``session.close``, end of life): its live socket gets 1000.

    Messages, audio state and the replay buffer are discarded; tasks stay readable under
    ``/api/v1/tasks`` until their own TTL. Returns False when there was no such session.
    """
    event = await _close_prepare(session_id, reason)
    if event is None:
        return False
    await get_channel_layer().group_send(group_name(session_id), _group_message(event))
    return True


# spoken replies (issue 14) ---------------------------------------------------------------------
async def asession_reply_cut_off(
    *, session_id: str, response_seq: int | None, sent_ms: int
) -> None:
    """Mark in the session's history that the reply of event ``response_seq`` was cut off
    (barge-in or ``response.cancel``) after ``sent_ms`` of its audio. It is a note after the
    reply's own entry, not a new message: ``message_count`` does not change."""
    item = seal(
        session_id,
        json.dumps(
            {
                "role": "assistant",
                "cut_off": True,
                "response_seq": response_seq,
                "sent_ms": sent_ms,
                "at": clock.now(),
            }
        ),
    )
    await store.amessage_append(session_id=session_id, item=item)


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, tests ------
session_create = blocking(asession_create)
session_connect = blocking(asession_connect)
session_set_status = blocking(asession_set_status)
session_message_add = blocking(asession_message_add)
session_emit = blocking(session_aemit)
session_close = blocking(session_aclose)
session_reply_cut_off = blocking(asession_reply_cut_off)
