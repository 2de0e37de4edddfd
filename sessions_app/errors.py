"""The sessions app's errors: what a client is told over REST (each an ``APIException`` with its
status, rendered by ``core.errors.exception_handler``) and over the socket (``ConnectRefused``
carries its close code; the protocol module names the codes)."""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled


class InvalidKeyHash(APIException):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Invalid encryption key hash"


class TooManySessions(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self):
        super().__init__(f"Maximum {settings.MAX_SESSIONS_PER_USER} concurrent sessions allowed")


class CreateThrottled(Throttled):
    """One client address past ``SESSION_CREATE_RATE``: 429, ``Retry-After`` the seconds to
    wait (DRF's throttle answer)."""


class ConnectRefused(Exception):
    """A socket may not attach; ``code`` is the WebSocket close code to send."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason
