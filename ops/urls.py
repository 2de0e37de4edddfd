from django.urls import path

from ops import views

app_name = "ops"
urlpatterns = [
    path("", views.sessions, name="sessions"),
    path("sessions/<str:session_id>/", views.session_detail, name="session"),
    path("sessions/<str:session_id>/close", views.session_close, name="session-close"),
    path("tasks/", views.tasks, name="tasks"),
    path("tasks/<str:task_id>/cancel", views.task_cancel, name="task-cancel"),
    path("health/", views.health, name="health"),
]
