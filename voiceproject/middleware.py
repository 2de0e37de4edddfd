"""The middleware, arranged so that the API's requests never hop to a thread.

Django's session, auth, message and frame-options middleware run on the operators' paths only.

Under ASGI every classic middleware costs a hop to Django's single thread-sensitive executor
per request, and the API needs none of these (it has no cookies, no login, no forms). So they
run as one scoped chain for ``/ops/`` and ``/admin/``; everything else skips them. CSRF is
applied where forms are: Django's admin views carry ``csrf_protect`` already, and so do the
operators' views.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware import security
from django.middleware.clickjacking import XFrameOptionsMiddleware

from voiceproject.handler import OPERATOR_PREFIXES


class SecurityMiddleware(security.SecurityMiddleware):
    """Django's, with its two header steps run inline under ASGI.

    ``MiddlewareMixin`` runs a sync ``process_request`` and ``process_response`` each in a
    thread when the chain is async; these two only read settings and set headers.
    """

    async def __acall__(self, request):
        response = self.process_request(request) or await self.get_response(request)
        return self.process_response(request, response)


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
