"""A phone line onto the same sessions: Twilio's webhook signature, the called number's
namespace, a call's session, and the TwiML that points Twilio's media stream at it.

What the wire looks like is the adapters' (``sessions_app.twilio_webhook``,
``sessions_app.twilio_consumer``); this module decides. A call's session is made by
``services.asession_create``, as a REST create is: the same namespace limit, the same
one-time connect token. Nothing here logs a phone number.

The signature is Twilio's documented algorithm ("Webhooks security"): the URL Twilio
requested, followed by each POST parameter's name and value sorted by name, HMAC-SHA1 under
the account's auth token, base64. Like Twilio's own validator (``twilio`` 9.13.0,
``RequestValidator``, which ``tests/test_twilio.py`` checks this against) it accepts the URL
with and without its default port, and HMAC-SHA256 when the request says so in
``X-Twilio-Webhooks-Signature-Settings``.
"""

import base64
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

import structlog
from django.conf import settings

from core.access import keyed_hash
from sessions_app import services
from sessions_app.tokens import token_issue

logger = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
DEVICE_TYPE = "twilio"
STREAM_PATH = "/ws/twilio"
# The one encoding, rate and channel count of Twilio's media (``start.mediaFormat``).
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


# the signature -----------------------------------------------------------------------------------
def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm a request names in ``X-Twilio-Webhooks-Signature-Settings``
    (``key=...,algorithm=HMAC_SHA256``); without one, the auth token's HMAC-SHA1."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def signature(*, secret: str, url: str, params, algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's signature of a request to ``url`` with the form ``params`` (a mapping of
    name to value, or a ``QueryDict`` whose names may repeat)."""
    text = url
    for name in sorted(set(params)):
        values = params.getlist(name) if hasattr(params, "getlist") else [params[name]]
        for value in sorted(set(values)):
            text += name + value
    mac = hmac.new(secret.encode(), text.encode(), _HASHES[algorithm])
    return base64.b64encode(mac.digest()).decode()


def _port_variants(url: str) -> tuple[str, str]:
    """``url`` without its port, and with the scheme's default port when it names none:
    Twilio signs either, depending on how the webhook's URL was written."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is None:
        port = 443 if parts.scheme == "https" else 80
        with_port = parts._replace(netloc=f"{parts.netloc}:{port}")
        return url, urlunsplit(with_port)
    return urlunsplit(parts._replace(netloc=host)), url


def signature_valid(
    *, secret: str, url: str, params, signed: str | None, settings_header: str | None = None
) -> bool:
    """Whether ``signed`` (the ``X-Twilio-Signature`` header) is Twilio's signature of this
    request; compared in constant time, against the URL with and without its port."""
    algorithm = signature_algorithm(settings_header)
    if not secret or not signed or algorithm not in _HASHES:
        return False
    ok = False
    for variant in _port_variants(url):
        expected = signature(secret=secret, url=variant, params=params, algorithm=algorithm)
        ok |= hmac.compare_digest(expected.encode(), signed.encode("utf-8", "replace"))
    return ok


# the line ----------------------------------------------------------------------------------------
def line_namespace(called: str | None) -> str:
    """The namespace of the called number (``To``) in ``TWILIO_NAMESPACES``, or its default."""
    lines = settings.TWILIO_NAMESPACES
    number = "".join((called or "").split())
    return lines.get(number) or lines.get("*") or "twilio"


def line_key_hash(namespace: str) -> str:
    """The key hash of a line's namespace: the service's own, derived from ``SECRET_KEY``, so
    that no REST client can create sessions in a namespace while a call holds it."""
    return "sha256:" + keyed_hash("twilio-line-key", namespace)[:64]


async def acall_start(*, called: str | None, call_sid: str | None = None) -> dict:
    """A session for an incoming call, in its line's namespace, and a connect token for the
    stream. Raises what ``services.asession_create`` raises (``TooManySessions`` when the
    line is full, ``InvalidKeyHash`` when REST sessions hold its namespace)."""
    namespace = line_namespace(called)
    record = await services.asession_create(
        namespace_id=namespace,
        key_hash=line_key_hash(namespace),
        device_type=DEVICE_TYPE,
        client_version=None,
        timezone=settings.TWILIO_TIMEZONE,
    )
    logger.info(
        "twilio_call_session",
        session_id=record["id"][:8],
        call_sid=(call_sid or "")[:8] or None,
    )
    return {"session_id": record["id"], "token": token_issue(session_id=record["id"])}


# TwiML -------------------------------------------------------------------------------------------
_XML = '<?xml version="1.0" encoding="UTF-8"?>'


def twiml_stream(*, url: str, token: str) -> str:
    """``<Connect><Stream>`` to ``url``; the connect token in a ``<Parameter>``, never in the
    URL (Twilio drops a stream URL's query string)."""
    return (
        f"{_XML}<Response><Connect><Stream url={quoteattr(url)}>"
        f'<Parameter name="token" value={quoteattr(token)}/>'
        "</Stream></Connect></Response>"
    )


def twiml_busy() -> str:
    """A full line: the caller hears a busy signal, and the call is not answered."""
    return f'{_XML}<Response><Reject reason="busy"/></Response>'
