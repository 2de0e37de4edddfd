"""Django's ASGI handler, minus the per-request thread that the API does not need.

Django's ``ASGIHandler`` opens a ``ThreadSensitiveContext`` per request, so the first sync
step of every request starts a new thread, and the end of the request joins it. The request
signals and ``response.close()`` are such sync steps, so even an async view pays for a
thread. On the bench machine a bare async view answered about 800 requests/s through it and
about 4,900 through the path below (``bench/rest.py`` has the project's own figures).

On every path except the operators' (``/ops/``, ``/admin/``) this handler instead:

* sends no ``request_started`` or ``request_finished``. Their receivers reset the query log,
  close old database connections and close caches, and none has work here: these paths use
  no database, and the cache back ends' ``close`` does nothing. The response's own closers
  (uploaded files) still run;
* lets sync views (the schema, the docs page, ``/healthz``) hop to asgiref's one shared
  thread, not to a thread of their own;
* does not race the view against a client disconnect: the API's views are short, and a
  response to a client that has gone is dropped by the server.

The operators' pages use the database (Django's auth tables), so they keep Django's handler
as it is, connection handling included.
"""

import contextlib

import django
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix

# The operators' pages: Django's auth, sessions and database are used there and nowhere else.
OPERATOR_PREFIXES = ("/ops/", "/admin/")


class VoiceASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(OPERATOR_PREFIXES):
            return await super().__call__(scope, receive, send)
        await self.handle_inline(scope, receive, send)

    async def handle_inline(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = await self.get_response_async(request)
            try:
                await self.send_response(response, send)
            finally:
                # What ``response.close()`` does, less its request_finished signal.
                for closer in response._resource_closers:
                    with contextlib.suppress(Exception):
                        closer()
                response._resource_closers.clear()
                response.closed = True
        finally:
            body_file.close()


def get_asgi_application() -> VoiceASGIHandler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    django.setup(set_prefix=False)
    return VoiceASGIHandler()
