from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from core import health
from core.metrics import metrics_view
from sessions_app.pages import client, favicon
from sessions_app.twilio_webhook import twilio_voice
from sessions_app.viewsets import SessionViewSet
from tasks_app.viewsets import TaskViewSet


def _docs(view):
    """The API's schema and docs pages, or 404 when ``API_DOCS_PUBLIC`` is off."""

    def gated(request, *args, **kwargs):
        if not settings.API_DOCS_PUBLIC:
            return JsonResponse({"detail": "Not found"}, status=404)
        return view(request, *args, **kwargs)

    return gated


router = SimpleRouter()
router.trailing_slash = "/?"  # the contract: a trailing slash is optional on every path
router.register("sessions", SessionViewSet, basename="session")
router.register("tasks", TaskViewSet, basename="task")

urlpatterns = [
    path("", client, name="client"),
    path("favicon.ico", favicon),
    path("api/v1/", include(router.urls)),
    # Twilio Media Streams: the incoming-call webhook (CONTRACT 2c)
    re_path(r"^api/v1/telephony/twilio/voice/?$", twilio_voice, name="twilio-voice"),
    path("ops/", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", _docs(SpectacularAPIView.as_view()), name="schema"),
    path("api/docs/", _docs(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics_view),
]

handler400 = "core.errors.json_400"
handler404 = "core.errors.json_404"
handler500 = "core.errors.json_500"
