"""Encryption at rest for what users say: AES-GCM under a key derived per session.

The key is HKDF-SHA256 of ``SECRET_KEY`` with the session id as context, so a dump of Redis
shows ciphertext only, and one session's key opens no other session's data. The session id is
also bound as associated data. With ``ENCRYPTION_ENABLED`` off, values are stored as they are.
"""

import base64
import contextlib
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_PREFIX = "v1:"


@functools.lru_cache(maxsize=4096)
def _aead(secret_key: str, session_id: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"voice-session-at-rest",
        info=b"session:" + session_id.encode(),
    ).derive(secret_key.encode())
    return AESGCM(key)


def seal(session_id: str, plaintext: str) -> str:
    """Encrypt ``plaintext`` for ``session_id`` (identity when encryption is off)."""
    if not settings.ENCRYPTION_ENABLED:
        return plaintext
    nonce = os.urandom(12)
    ct = _aead(settings.SECRET_KEY, session_id).encrypt(
        nonce, plaintext.encode(), session_id.encode()
    )
    return _PREFIX + base64.b64encode(nonce + ct).decode()


class NotSealed(ValueError):
    """With encryption on, a stored value that was not sealed: never taken as plaintext."""


def unseal(session_id: str, stored: str) -> str:
    """Decrypt what :func:`seal` stored. With encryption off, values pass through.

    With it on, a value without the seal's prefix is an error, not plaintext: a value written
    into the store by anything but :func:`seal` (a forged event) must not pass as genuine.
    """
    if not settings.ENCRYPTION_ENABLED:
        return stored
    if not stored.startswith(_PREFIX):
        raise NotSealed("the stored value is not sealed")
    raw = base64.b64decode(stored[len(_PREFIX) :])
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    for secret in keys[:-1]:  # a rotation's old keys still open what they sealed
        with contextlib.suppress(InvalidTag):
            return _open(secret, session_id, raw)
    return _open(keys[-1], session_id, raw)


def _open(secret: str, session_id: str, raw: bytes) -> str:
    return _aead(secret, session_id).decrypt(raw[:12], raw[12:], session_id.encode()).decode()
