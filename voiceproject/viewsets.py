"""DRF viewsets served as async views, so that an API request never waits for a shared thread.

Django runs a sync view through asgiref's thread-sensitive executor: one shared thread (one
per request under Django's own handler), so every request's Redis round trips queue behind
each other's. A route of an :class:`AsyncViewSet` runs the whole DRF view (parsing, throttles,
the action, rendering) instead

* inline in the event loop when the state lives in local memory and the action is one of
  ``store_only_actions``: it reads and writes the store (dict operations) and sends nothing
  to the channel layer, so nothing in it blocks;
* otherwise in a thread of the loop's default pool (``thread_sensitive=False``), so that
  requests waiting on Redis overlap. Actions that notify sockets always take this path:
  their sync channel-layer send must not run on the loop it waits for.

The response is rendered where the view ran and handed to Django as a plain ``HttpResponse``;
a DRF ``Response`` would be rendered in one more thread hop.
"""

import functools

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from rest_framework import viewsets

from voiceproject.kv import get_kv


class AsyncViewSet(viewsets.ViewSet):
    store_only_actions: frozenset[str] = frozenset()

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        view = super().as_view(actions, **initkwargs)
        inline_methods = {m for m, a in (actions or {}).items() if a in cls.store_only_actions}

        def rendered(request, *args, **kwargs) -> HttpResponse:
            response = view(request, *args, **kwargs)
            response.render()
            plain = HttpResponse(response.content, status=response.status_code)
            for header, value in response.items():
                plain[header] = value
            return plain

        in_thread = sync_to_async(rendered, thread_sensitive=False)

        async def async_view(request, *args, **kwargs):
            if request.method.lower() in inline_methods and get_kv().local:
                return rendered(request, *args, **kwargs)
            return await in_thread(request, *args, **kwargs)

        # DRF's attributes (cls, actions, initkwargs, csrf_exempt) for routers and the schema.
        return functools.update_wrapper(async_view, view)
