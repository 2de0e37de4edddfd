"""Encryption at rest (core/crypto.py): keys per session, tampering, and turning it off.

``seal`` is AES-GCM under a key derived from ``SECRET_KEY`` and the session id, with the
session id as associated data. A value must open only under its own session's key, a changed
value must be an error (never a plaintext), and with ``ENCRYPTION_ENABLED=false`` what is
stored is exactly what docs/operations.md says.
"""

import asyncio
import base64
import json
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from django.test import override_settings

from core.crypto import seal, unseal
from tests.conftest import KEY_HASH, connect, receive_until, redis_dump

pytestmark = pytest.mark.django_db(databases=[])

SECRET = "Schmidt-Kowalski owes 4711"


def _ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def test_a_value_sealed_for_one_session_does_not_open_under_another():
    mine, theirs = _ids()
    sealed = seal(mine, SECRET)
    assert sealed.startswith("v1:") and SECRET not in sealed
    assert unseal(mine, sealed) == SECRET
    with pytest.raises(InvalidTag):
        unseal(theirs, sealed)


def test_a_value_does_not_open_under_another_secret_key():
    session_id, _ = _ids()
    sealed = seal(session_id, SECRET)
    with (
        override_settings(SECRET_KEY="another-deployment-secret-key-0123456789"),
        pytest.raises(InvalidTag),
    ):
        unseal(session_id, sealed)


def _tampered(sealed: str, position: int) -> str:
    raw = bytearray(base64.b64decode(sealed[3:]))
    raw[position] ^= 0x01
    return "v1:" + base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "position", [0, 11, 12, 20, -1], ids=["nonce", "nonce-end", "ct", "ct2", "tag"]
)
def test_a_tampered_value_is_an_error_never_a_plaintext(position):
    session_id, _ = _ids()
    sealed = seal(session_id, SECRET)
    with pytest.raises(InvalidTag):
        unseal(session_id, _tampered(sealed, position))


def test_a_truncated_or_extended_value_is_an_error():
    session_id, _ = _ids()
    sealed = seal(session_id, SECRET)
    raw = base64.b64decode(sealed[3:])
    for changed in (raw[:-1], raw + b"\x00", raw[:12]):
        with pytest.raises((InvalidTag, ValueError)):
            unseal(session_id, "v1:" + base64.b64encode(changed).decode())


def test_with_encryption_on_an_unsealed_value_is_an_error():
    session_id, _ = _ids()
    forged = json.dumps({"type": "response", "text": "forged"})
    with pytest.raises(Exception):  # noqa: B017 - any error will do; a pass-through will not
        unseal(session_id, forged)


# ENCRYPTION_ENABLED=false: what is stored ------------------------------------------------
def _key(dump: dict[bytes, bytes], suffix: str) -> bytes:
    return next(k for k in dump if k.endswith(b":" + suffix.encode()) and b":s:" in k)


def _events(items: list[bytes]) -> list[dict]:
    """The replay buffer's items: ``<seq> <event JSON>``."""
    return [json.loads(item.split(b" ", 1)[1]) for item in items]


def _holding(dump: dict[bytes, bytes], needle: bytes) -> set[str]:
    """Which kinds of key hold ``needle``: the part of the key name before the id."""
    kinds = set()
    for key, value in dump.items():
        if needle in value:
            name = key.decode().split(":", 2)[-1]  # drop the cache's prefix and version
            parts = name.split(":")
            kinds.add(parts[0] + (":" + parts[2] if len(parts) > 2 else ""))
    return kinds


@pytest.mark.parametrize("enabled", [True, False])
async def test_what_a_redis_dump_holds_with_encryption_on_and_off(redis_backend, api, enabled):
    """Off, the namespace id, messages, the replay buffer's events and task texts and results
    are plaintext in Redis (docs/operations.md, "Encryption off"); on, none of them is.
    """
    from asgiref.sync import sync_to_async

    namespace = "encryption-off-namespace"
    with override_settings(ENCRYPTION_ENABLED=enabled):
        response = await sync_to_async(api.post, thread_sensitive=False)(
            "/api/v1/sessions", {"namespace_id": namespace, "key_hash": KEY_HASH}, format="json"
        )
        session = response.json()
        comm, _ = await connect(session)
        await comm.send_json_to({"type": "text", "text": f"add {SECRET} to my list"})
        await receive_until(comm, "response")
        await comm.send_json_to({"type": "text", "text": f"mark {SECRET} as done"})
        await receive_until(comm, "response")
        for _ in range(50):  # the to-do's handler, run when it is done, stores its result
            dump = redis_dump(redis_backend)
            if b"result=" + (b"v1:" if enabled else b"{") in b" ".join(dump.values()):
                break
            await asyncio.sleep(0.05)
        await comm.disconnect()

    secret = b"owes 4711"  # the intent lower-cases the item; every copy keeps this
    if enabled:
        for needle in (secret, b"4711", namespace.encode()):
            assert _holding(dump, needle) == set(), needle
        return
    # the session record (namespace id), its messages and replay buffer, the task record
    assert _holding(dump, namespace.encode()) == {"s"}
    assert _holding(dump, secret) == {"s:msg", "s:ev", "t"}
    messages = [json.loads(m) for m in redis_backend.lrange(_key(dump, "msg"), 0, -1)]
    assert messages[0]["role"] == "user" and messages[0]["text"] == f"add {SECRET} to my list"
    replies = [e for e in _events(redis_backend.lrange(_key(dump, "ev"), 0, -1))]
    assert "Added schmidt kowalski owes 4711 to your list." in [
        e.get("text") for e in replies if e["type"] == "response"
    ]
    record = redis_backend.hgetall(next(k for k in dump if b":t:" in k))
    assert json.loads(record[b"payload"]) == {"text": "schmidt kowalski owes 4711", "zone": "UTC"}
    assert json.loads(record[b"result"])["text"] == "schmidt kowalski owes 4711"
    assert not any(b"v1:" in v for v in dump.values()), "nothing is sealed with encryption off"
