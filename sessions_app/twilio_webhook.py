"""``POST /api/v1/telephony/twilio/voice``: Twilio's incoming-call webhook (CONTRACT 2c).

A thin interface: it reads Twilio's form, checks ``X-Twilio-Signature`` over the URL Twilio
called, asks ``sessions_app.telephony`` for the call's session, and answers TwiML. Answers:

* 200 TwiML ``<Connect><Stream url="wss://HOST/ws/twilio">`` with the connect token in a
  ``<Parameter>``; 200 TwiML ``<Reject reason="busy"/>`` when the line's namespace is full;
* 403 ``{"detail": "Invalid Twilio signature"}`` for a missing or wrong signature;
* 503 ``{"detail": "Twilio is not configured"}`` while ``TWILIO_AUTH_TOKEN`` is unset;
* 405 for any method but POST, 413 for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, 400 for
  a form Django refuses or a forwarded host not in ``ALLOWED_HOSTS``, 503 when the state
  store is down or full.

The URL Twilio called is rebuilt from the request as this service received it. Behind
proxies (``NUM_PROXIES`` > 0) the scheme and host are the ones the outermost trusted proxy
saw, from ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (the Nth value from the right, as
the create throttle reads ``X-Forwarded-For``); with ``NUM_PROXIES`` 0 those headers are
ignored, so a client cannot choose the URL that is checked.
"""

import structlog
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.http import HttpResponse, JsonResponse, QueryDict
from django.http.request import split_domain_port, validate_host
from django.views.decorators.csrf import csrf_exempt
from rest_framework.settings import api_settings

from core.kv import KVUnavailable, StoreFull
from sessions_app import telephony
from sessions_app.errors import InvalidKeyHash, TooManySessions

logger = structlog.get_logger(__name__)


def _trusted_forwarded(request, header: str) -> str | None:
    """A forwarded header's value as the outermost trusted proxy set it, or None."""
    num_proxies = api_settings.NUM_PROXIES or 0
    raw = request.META.get(header)
    if num_proxies <= 0 or not raw:
        return None
    values = raw.split(",")
    return values[-min(num_proxies, len(values))].strip() or None


def public_origin(request) -> tuple[str, str]:
    """The scheme and host of the URL the caller used (see the module's docstring)."""
    scheme = request._get_scheme()  # the connection's own: no proxy header in it
    proto = _trusted_forwarded(request, "HTTP_X_FORWARDED_PROTO")
    if proto in ("http", "https"):
        scheme = proto
    host = _trusted_forwarded(request, "HTTP_X_FORWARDED_HOST")
    if host is None:
        return scheme, request.get_host()  # the Host header, checked against ALLOWED_HOSTS
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        raise DisallowedHost("forwarded host not in ALLOWED_HOSTS")
    return scheme, host


def _detail(text: str, status: int) -> JsonResponse:
    return JsonResponse({"detail": text}, status=status)


def _twiml(body: str) -> HttpResponse:
    return HttpResponse(body, content_type="text/xml; charset=utf-8")


@csrf_exempt
async def twilio_voice(request):
    """Twilio's incoming-call webhook: a session for the call, and TwiML to stream to it."""
    if request.method != "POST":
        response = _detail(f'Method "{request.method}" not allowed.', 405)
        response["Allow"] = "POST"
        return response
    if not settings.TWILIO_AUTH_TOKEN:
        logger.warning("twilio_not_configured")
        return _detail("Twilio is not configured", 503)
    try:
        # Twilio posts a urlencoded form; nothing else is parsed (no multipart upload, which
        # Django may spool to disk), so any other body is signed as no fields at all.
        form = request.content_type == "application/x-www-form-urlencoded"
        params = request.POST if form else QueryDict()
        scheme, host = public_origin(request)
    except RequestDataTooBig:
        return _detail("Request body too large", 413)
    except (TooManyFieldsSent, DisallowedHost):
        return _detail("Bad request", 400)
    url = f"{scheme}://{host}{request.get_full_path()}"
    if not telephony.signature_valid(
        secret=settings.TWILIO_AUTH_TOKEN,
        url=url,
        params=params,
        signed=request.headers.get(telephony.SIGNATURE_HEADER),
        settings_header=request.headers.get(telephony.SIGNATURE_SETTINGS_HEADER),
    ):
        logger.warning("twilio_signature_invalid")
        return _detail("Invalid Twilio signature", 403)
    try:
        call = await telephony.acall_start(called=params.get("To"), call_sid=params.get("CallSid"))
    except TooManySessions:
        logger.info("twilio_line_busy")
        return _twiml(telephony.twiml_busy())
    except InvalidKeyHash:
        logger.warning("twilio_line_namespace_held_by_another_key")
        return _twiml(telephony.twiml_busy())
    except StoreFull:
        logger.warning("state_store_full")
        return _detail("The session store is full, try again later", 503)
    except KVUnavailable as exc:
        logger.warning("state_unavailable", error_type=type(exc).__name__)
        return _detail("Session state is unavailable, try again shortly", 503)
    stream_scheme = "wss" if scheme == "https" else "ws"
    stream_url = f"{stream_scheme}://{host}{telephony.STREAM_PATH}"
    return _twiml(telephony.twiml_stream(url=stream_url, token=call["token"]))
