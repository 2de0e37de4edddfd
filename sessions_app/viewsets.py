"""``/api/v1/sessions``: the seed's wire contract on DRF viewsets."""

from django.conf import settings
from django.core.cache import caches
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from sessions_app import selectors, services
from sessions_app.serializers import (
    ClosedSerializer,
    SessionCreateSerializer,
    SessionResponseSerializer,
    StatsSerializer,
)
from tasks_app.selectors import task_list, task_pending_count
from tasks_app.serializers import TaskListQuerySerializer, TaskResponseSerializer
from tasks_app.services import task_response
from voiceproject.clock import iso
from voiceproject.errors import NotFound
from voiceproject.ids import parse_uuid
from voiceproject.openapi import errors
from voiceproject.viewsets import AsyncViewSet


class SessionCreateThrottle(SimpleRateThrottle):
    """Session creates per client IP, counted in the ``throttle`` cache (all workers share it)."""

    scope = "session_create"

    def __init__(self):
        self.cache = caches["throttle"]
        super().__init__()

    def get_rate(self):
        return settings.SESSION_CREATE_RATE

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def _session_or_404(pk: str) -> dict:
    session_id = parse_uuid(pk)
    record = selectors.session_get(session_id=session_id) if session_id else None
    if record is None:
        raise NotFound("Session not found")
    return record


def _render(request, record: dict) -> dict:
    url = None
    if record["status"] != "closed":
        url = services.session_connect_url(
            session_id=record["id"], host=request.get_host(), secure=request.is_secure()
        )
    return {
        "id": record["id"],
        "namespace_id": record["namespace_id"],
        "status": record["status"],
        "created_at": iso(record["created_at"]),
        "websocket_url": url,
        "expires_at": iso(record["expires_at"]),
        "message_count": int(record.get("message_count") or 0),
        "pending_tasks_count": task_pending_count(session_id=record["id"]),
    }


class SessionViewSet(AsyncViewSet):
    lookup_value_regex = "[^/]+"
    store_only_actions = frozenset({"create", "retrieve", "tasks", "stats"})

    def get_throttles(self):
        return [SessionCreateThrottle()] if self.action == "create" else []

    @extend_schema(
        request=SessionCreateSerializer,
        responses={200: SessionResponseSerializer, **errors(400, 401, 413, 429)},
    )
    def create(self, request):
        """Create a session; the answer carries a ``websocket_url`` with a one-time token."""
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = services.session_create(**body.validated_data)
        return Response(_render(request, record))

    @extend_schema(responses={200: SessionResponseSerializer, **errors(404)})
    def retrieve(self, request, pk=None):
        """The session's state, with a fresh ``websocket_url`` (how a client reconnects)."""
        return Response(_render(request, _session_or_404(pk)))

    @extend_schema(responses={200: ClosedSerializer, **errors(404)})
    def destroy(self, request, pk=None):
        """Close the session: its live socket, on any worker, gets 1000."""
        record = _session_or_404(pk)
        if not services.session_close(session_id=record["id"], reason="deleted"):
            raise NotFound("Session not found")
        return Response({"status": "closed", "session_id": record["id"]})

    @extend_schema(
        parameters=[TaskListQuerySerializer],
        responses={200: TaskResponseSerializer(many=True), **errors(400, 404)},
    )
    @action(detail=True, methods=["get"])
    def tasks(self, request, pk=None):
        """The session's tasks, optionally ``?state=``."""
        record = _session_or_404(pk)
        query = TaskListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        tasks = task_list(session_id=record["id"], state=query.validated_data.get("state"))
        return Response([task_response(t) for t in tasks])

    @extend_schema(responses={200: StatsSerializer, **errors(404)})
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        """Aggregate counts, no PII."""
        record = _session_or_404(pk)
        stats = selectors.session_stats(session_id=record["id"])
        if stats is None:
            raise NotFound("Session not found")
        return Response(stats)
