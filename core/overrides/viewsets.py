"""DRF viewsets served as async views, so that an API request never waits for a shared thread.

Django runs a sync view through asgiref's thread-sensitive executor: one shared thread, so
every request's Redis round trips queue behind each other's. A route of an
:class:`AsyncViewSet` is an async view instead, and runs its DRF action

* for an ``async def`` action: on the event loop, with DRF's own steps (parsing, content
  negotiation, permissions, exception handling, rendering) around an awaited action. Its
  services are async, so the request never leaves the loop. Permissions and throttles run
  inline here, so such an action must have none that does I/O (the create throttle is
  counted by the create's own store step instead: ``SessionCreateThrottle.client``);
* for a plain action: in a thread of the loop's default pool (none of the API's is one now).

The response is rendered where the view ran and handed to Django as a plain ``HttpResponse``;
a DRF ``Response`` would be rendered in one more thread hop.
"""

import functools

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.http import HttpResponse
from rest_framework import viewsets


def _plain(response) -> HttpResponse:
    response.render()
    plain = HttpResponse(response.content, status=response.status_code)
    for header, value in response.items():
        plain[header] = value
    return plain


class AsyncViewSet(viewsets.ViewSet):
    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        actions = actions or {}
        view = super().as_view(actions, **initkwargs)
        async_methods = {m for m, a in actions.items() if iscoroutinefunction(getattr(cls, a))}
        if "get" in async_methods and "head" not in actions:
            async_methods.add("head")  # DRF answers HEAD with the GET action

        def rendered(request, *args, **kwargs) -> HttpResponse:
            return _plain(view(request, *args, **kwargs))

        in_thread = sync_to_async(rendered, thread_sensitive=False)

        async def async_view(request, *args, **kwargs):
            method = request.method.lower()
            if method in async_methods:
                return _plain(await view(request, *args, **kwargs))
            return await in_thread(request, *args, **kwargs)

        # DRF's attributes (cls, actions, initkwargs, csrf_exempt) for routers and the schema.
        return functools.update_wrapper(async_view, view)

    def dispatch(self, request, *args, **kwargs):
        """DRF's dispatch; for an ``async def`` action, an awaitable of the same steps."""
        handler = getattr(self, request.method.lower(), None)
        if handler is None or not iscoroutinefunction(handler):
            return super().dispatch(request, *args, **kwargs)
        return self._adispatch(handler, request, *args, **kwargs)

    async def _adispatch(self, handler, request, *args, **kwargs):
        # rest_framework.views.APIView.dispatch, with the action awaited.
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            response = await handler(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response
