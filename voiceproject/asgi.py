"""ASGI entry point: ``daphne voiceproject.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")

from core.overrides.handler import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up before consumers are imported

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.core.handlers.exception import response_for_exception  # noqa: E402

from core.sync import remember_serving_loop  # noqa: E402
from ops.services import worker_heartbeat_start  # noqa: E402
from tasks_app.scheduler import scheduler_start  # noqa: E402
from tasks_app.worker import TaskWorker  # noqa: E402
from voiceproject.routing import websocket_urlpatterns  # noqa: E402


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's, except that a path that climbs out of the static roots is a 400, not a 500.

    ``/static/..%2f..%2fetc/passwd`` reaches the finders as ``../../etc/passwd``; their
    ``safe_join`` refuses it with ``SuspiciousFileOperation``, which Django's handler lets
    through (it catches only ``Http404``). It gets Django's answer to any suspicious request:
    400, logged by ``django.security`` (which logs only the kind, see core.logging).
    """

    async def get_response_async(self, request):
        try:
            return await super().get_response_async(request)
        except SuspiciousOperation as exc:
            return response_for_exception(request, exc)


class NativeClientOriginValidator(OriginValidator):
    """``AllowedHostsOriginValidator``, except that a missing Origin passes.

    Browsers always send Origin, so a foreign or ``null`` one is refused at the handshake
    (403): that stops cross-site socket hijacking. Native mobile clients send none; Channels'
    own validator would refuse them, the contract lets them through.
    """

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def _allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


_router = ProtocolTypeRouter(
    {
        # Static files are only Swagger UI's (bundled by drf-spectacular-sidecar), served by the
        # app itself so that /api/docs/ works without a CDN or a separate static server.
        "http": StaticFilesHandler(django_asgi_app),
        "websocket": NativeClientOriginValidator(
            URLRouter(websocket_urlpatterns), _allowed_origins()
        ),
        "channel": ChannelNameRouter({settings.TASK_WORKER_CHANNEL: TaskWorker.as_asgi()}),
    }
)


async def application(scope, receive, send):
    """The router, noting which loop serves this process's sockets (see core.sync)."""
    if scope["type"] == "websocket":
        remember_serving_loop()
    worker_heartbeat_start()
    scheduler_start()
    return await _router(scope, receive, send)
