"""Who may touch a session: session tokens, ids bound to a session, keyed hashes.

Nothing here is stored. A session token is the session's id, 128 random bits and a MAC over
both under ``SECRET_KEY``, so checking one needs no round trip, and a token for a session
that has since ended is still recognisably *its* token (the contract answers it with 404,
not 401). A task id carries a MAC of its session in its last 64 bits, so a task path can tell
whether a token's holder owns the task without reading anything: another session's token gets
the same 401 whether or not the task exists.

Every comparison of a secret is in constant time. Keys are derived from ``SECRET_KEY`` and
each of ``SECRET_KEY_FALLBACKS`` (Django's key rotation), with a salt per use.
"""

import base64
import binascii
import hmac
import os
import uuid

from django.conf import settings
from django.utils.crypto import salted_hmac

from core.errors import InvalidSessionToken

_TOKEN_SALT = "core.access.session-token"
_BOUND_ID_SALT = "core.access.bound-id"
_KEYED_HASH_SALT = "core.access.keyed-hash"
_NONCE_BYTES = 16
_MAC_BYTES = 16
_TOKEN_BYTES = 16 + _NONCE_BYTES + _MAC_BYTES


def _secrets() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _mac(salt: str, message: bytes, secret: str) -> bytes:
    return salted_hmac(salt, message, secret=secret, algorithm="sha256").digest()


def _matches(salt: str, message: bytes, mac: bytes, *, size: int, mask=None) -> bool:
    for secret in _secrets():
        expected = _mac(salt, message, secret)[:size]
        if mask is not None:
            expected = mask(expected)
        if hmac.compare_digest(expected, mac):
            return True
    return False


# session tokens ---------------------------------------------------------------------------------
def session_token_issue(*, session_id: str) -> str:
    """A new bearer token for ``session_id``: URL-safe, 128 random bits, shown once."""
    raw = uuid.UUID(session_id).bytes + os.urandom(_NONCE_BYTES)
    token = raw + _mac(_TOKEN_SALT, raw, settings.SECRET_KEY)[:_MAC_BYTES]
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def session_token_subject(token: str) -> str | None:
    """The session id a genuine token was issued for, or None for anything else."""
    if not isinstance(token, str) or len(token) != 64:
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) != _TOKEN_BYTES:
        return None
    raw, mac = data[:-_MAC_BYTES], data[-_MAC_BYTES:]
    if not _matches(_TOKEN_SALT, raw, mac, size=_MAC_BYTES):
        return None
    return str(uuid.UUID(bytes=raw[:16]))


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


# ids bound to a session -------------------------------------------------------------------------
def _variant(mac: bytes) -> bytes:
    """RFC 4122 variant bits on the first byte of the MAC half of a bound id."""
    return bytes([(mac[0] & 0x3F) | 0x80]) + mac[1:]


def bound_id_issue(*, owner_id: str) -> str:
    """A uuid4-shaped id whose last 64 bits are a MAC of ``owner_id`` and its first 64."""
    head = bytearray(os.urandom(8))
    head[6] = (head[6] & 0x0F) | 0x40  # version 4
    mac = _variant(_mac(_BOUND_ID_SALT, uuid.UUID(owner_id).bytes + head, settings.SECRET_KEY))
    return str(uuid.UUID(bytes=bytes(head) + mac[:8]))


def bound_id_owned_by(*, bound_id: str, owner_id: str) -> bool:
    """Whether ``bound_id`` was issued for ``owner_id`` (both canonical uuids)."""
    raw = uuid.UUID(bound_id).bytes
    message = uuid.UUID(owner_id).bytes + raw[:8]
    return _matches(_BOUND_ID_SALT, message, raw[8:], size=8, mask=_variant)


# keyed hashes -----------------------------------------------------------------------------------
def keyed_hash(*parts: str, secret: str | None = None) -> str:
    """A keyed hash of ``parts``: comparable, stored instead of the value, never reversible."""
    message = b"\x00".join(p.encode() for p in parts)
    return _mac(_KEYED_HASH_SALT, message, secret or settings.SECRET_KEY).hex()


def keyed_hash_earlier(*parts: str) -> tuple[str, ...]:
    """The same keyed hash under each of ``SECRET_KEY_FALLBACKS`` (a key rotation's old keys)."""
    fallbacks = getattr(settings, "SECRET_KEY_FALLBACKS", [])
    return tuple(keyed_hash(*parts, secret=key) for key in fallbacks)


# the holder of a request --------------------------------------------------------------------------
def _holder(request) -> str:
    """The session id the request's bearer token was issued for; 401 without a genuine one."""
    subject = session_token_subject(bearer_token(request.headers.get("Authorization")))
    if subject is None:
        raise InvalidSessionToken()
    return subject


def session_holder_check(request, *, session_id: str | None) -> None:
    """Let the request through only if it holds ``session_id``'s token (401 otherwise).

    ``session_id`` is None for a path that names no valid id: that is 401 too, so an id can't
    be probed. With ``SESSION_AUTH=off`` every request passes, as in the seed.
    """
    if settings.SESSION_AUTH == "off":
        return
    if session_id is None or not hmac.compare_digest(_holder(request), session_id):
        raise InvalidSessionToken()


def task_holder_confirm(request, record: dict) -> dict:
    """Once a task is read: its record names the token's session too (defence in depth)."""
    if settings.SESSION_AUTH != "off" and not hmac.compare_digest(
        _holder(request), str(record.get("session_id", ""))
    ):
        raise InvalidSessionToken()
    return record


def task_holder_check(request, *, task_id: str | None) -> None:
    """Let the request through only if its token's session owns ``task_id`` (401 otherwise)."""
    if settings.SESSION_AUTH == "off":
        return
    owner = _holder(request)
    if task_id is None or not bound_id_owned_by(bound_id=task_id, owner_id=owner):
        raise InvalidSessionToken()
