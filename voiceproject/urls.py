from django.urls import include, path
from rest_framework.routers import SimpleRouter

from sessions_app.viewsets import SessionViewSet
from tasks_app.viewsets import TaskViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # the contract: a trailing slash is optional on every path
router.register("sessions", SessionViewSet, basename="session")
router.register("tasks", TaskViewSet, basename="task")

urlpatterns = [
    path("api/v1/", include(router.urls)),
]

handler400 = "voiceproject.errors.json_400"
handler404 = "voiceproject.errors.json_404"
handler500 = "voiceproject.errors.json_500"
