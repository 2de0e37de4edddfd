"""The middleware, arranged so that the API's requests never hop to a thread.

Django's session, auth, message and frame-options middleware run on the operators' paths only.

Under ASGI every classic middleware costs a hop to Django's single thread-sensitive executor
per request, and the API needs none of these (it has no cookies, no login, no forms). So they
run as one scoped chain for ``/ops/`` and ``/admin/``; everything else skips them. CSRF is
applied where forms are: Django's admin views carry ``csrf_protect`` already, and so do the
operators' views.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware import security
from django.middleware.clickjacking import XFrameOptionsMiddleware

from core.overrides.handler import OPERATOR_PREFIXES

# Responses under this prefix may carry a session token or a connect token (the create's
# answer, every GET of a session): no cache, shared or private, may keep them.
NO_STORE_PREFIX = "/api/v1/"


class SecurityMiddleware(security.SecurityMiddleware):
    """Django's, with its two header steps run inline under ASGI, and three more headers.

    ``MiddlewareMixin`` runs a sync ``process_request`` and ``process_response`` each in a
    thread when the chain is async; these two only read settings and set headers.

    On top of Django's headers:

    * every HTML page (the web client at ``/``, Swagger UI, the operators' pages) refuses to
      be framed: ``X-Frame-Options`` (``X_FRAME_OPTIONS``, ``DENY``) and its modern form,
      ``Content-Security-Policy: frame-ancestors 'none'`` (``'self'`` with ``SAMEORIGIN``);
      a view marked ``xframe_options_exempt`` is left alone;
    * every ``/api/v1/`` response is ``Cache-Control: no-store``.
    """

    async def __acall__(self, request):
        response = self.process_request(request) or await self.get_response(request)
        return self.process_response(request, response)

    def process_response(self, request, response):
        response = super().process_response(request, response)
        if request.path.startswith(NO_STORE_PREFIX):
            response.headers["Cache-Control"] = "no-store"
        elif response.get("Content-Type", "").startswith("text/html") and not getattr(
            response, "xframe_options_exempt", False
        ):
            _refuse_framing(response)
        return response


def _refuse_framing(response) -> None:
    option = getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()
    response.headers.setdefault("X-Frame-Options", option)
    ancestors = "frame-ancestors " + ("'self'" if option == "SAMEORIGIN" else "'none'")
    policy = response.get("Content-Security-Policy")
    if not policy:
        response.headers["Content-Security-Policy"] = ancestors
    elif "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; {ancestors}"


class OperatorPagesMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.scoped = SessionMiddleware(
            AuthenticationMiddleware(MessageMiddleware(XFrameOptionsMiddleware(get_response)))
        )
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        chain = self.scoped if request.path.startswith(OPERATOR_PREFIXES) else self.get_response
        return chain(request)

    async def _acall(self, request):
        if request.path.startswith(OPERATOR_PREFIXES):
            return await self.scoped(request)
        return await self.get_response(request)
