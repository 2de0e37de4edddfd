"""Signed, one-time connect tokens.

A token is ``TimestampSigner``-signed ``{"s": session_id, "n": nonce}``: bound to one
session, valid for ``CONNECT_WINDOW_SECONDS``, and made one-time by claiming its nonce in the
store at connect (see ``services.session_connect``).
"""

import secrets

from django.conf import settings
from django.core import signing

_SALT = "voice-session.connect"


class TokenInvalid(Exception):
    """Missing, forged, expired, or issued for another session."""


def token_issue(*, session_id: str) -> str:
    return signing.dumps(
        {"s": session_id, "n": secrets.token_urlsafe(12)}, salt=_SALT, compress=False
    )


def token_verify(*, token: str, session_id: str) -> str:
    """Return the token's nonce, or raise :class:`TokenInvalid`."""
    if not token:
        raise TokenInvalid("missing")
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.CONNECT_WINDOW_SECONDS)
    except signing.SignatureExpired as exc:
        raise TokenInvalid("expired") from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise TokenInvalid("forged") from exc
    if not isinstance(data, dict) or data.get("s") != session_id or not data.get("n"):
        raise TokenInvalid("wrong session")
    return str(data["n"])


def token_session(token: object) -> str | None:
    """The session a genuine, unexpired token was issued for, or None.

    For a dialect whose socket URL cannot name the session (Twilio's ``<Stream>``: the token
    arrives alone, in the ``start`` message); ``token_verify`` then checks it in full.
    """
    if not isinstance(token, str) or not token or len(token) > 512:
        return None
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.CONNECT_WINDOW_SECONDS)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    session_id = data.get("s") if isinstance(data, dict) else None
    return session_id if isinstance(session_id, str) else None
