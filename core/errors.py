"""One error shape for the API: ``{"detail": "..."}`` (400s carry DRF's field errors)."""

import structlog
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.kv import KVUnavailable, StoreFull
from core.metrics import REDIS_ERRORS

logger = structlog.get_logger(__name__)


class NotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "Not found"


class InvalidSessionToken(APIException):
    """No bearer token, a malformed one, or another session's (CONTRACT section 1b)."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Invalid session token"
    auth_header = 'Bearer realm="voice-session"'


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict"


class StateUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Session state is unavailable, try again shortly"


class StoreFullError(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The session store is full, try again later"


def exception_handler(exc, context):
    """DRF's handler, plus 413 for oversized bodies and 503 when the state store is down or
    full (the embedded store refuses new sessions rather than forget live ones)."""
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "Request body too large"}, status=413)
    if isinstance(exc, StoreFull):
        logger.warning("state_store_full")
        exc = StoreFullError()
    if isinstance(exc, KVUnavailable | RedisError):
        # The store wraps its own errors; Django's cache (the throttle) raises Redis's.
        logger.warning("state_unavailable", error_type=type(exc).__name__)
        if isinstance(exc, RedisError):
            REDIS_ERRORS.inc()
        exc = StateUnavailable()
    return drf_exception_handler(exc, context)


def json_404(request, exception=None):
    return JsonResponse({"detail": "Not found"}, status=404)


def json_500(request):
    return JsonResponse({"detail": "Internal server error"}, status=500)


def json_400(request, exception=None):
    return JsonResponse({"detail": "Bad request"}, status=400)
