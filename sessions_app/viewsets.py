"""``/api/v1/sessions``: the seed's wire contract on DRF viewsets."""

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core.access import session_holder_check
from core.clock import iso
from core.errors import NotFound
from core.ids import parse_uuid
from core.openapi import errors
from core.overrides.viewsets import AsyncViewSet
from sessions_app import selectors, services
from sessions_app.serializers import (
    ClosedSerializer,
    SessionCreatedSerializer,
    SessionCreateSerializer,
    SessionResponseSerializer,
    StatsSerializer,
)
from sessions_app.throttles import SessionCreateThrottle
from tasks_app.selectors import atask_list
from tasks_app.serializers import TaskListQuerySerializer, TaskResponseSerializer
from tasks_app.services import task_response


def _held_session_id(request, pk: str) -> str | None:
    """The session id of the path, once the request has shown its token (401 otherwise)."""
    session_id = parse_uuid(pk)
    session_holder_check(request, session_id=session_id)
    return session_id


async def _session_or_404(request, pk: str) -> dict:
    session_id = _held_session_id(request, pk)
    record = await selectors.asession_get(session_id=session_id) if session_id else None
    if record is None:
        raise NotFound("Session not found")
    return record


def _render(request, record: dict, pending_tasks: int) -> dict:
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
        "pending_tasks_count": pending_tasks,
        "timezone": record.get("timezone") or "UTC",
        "intents": record.get("intents") != "off",
    }


class SessionViewSet(AsyncViewSet):
    lookup_value_regex = "[^/]+"
    open_actions = frozenset({"create"})  # every other action needs the session's token

    @extend_schema(
        request=SessionCreateSerializer,
        responses={200: SessionCreatedSerializer, **errors(400, 401, 413, 429)},
    )
    async def create(self, request):
        """Create a session; the answer alone carries its ``session_token``."""
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = await services.asession_create(
            **body.validated_data, client=SessionCreateThrottle().client(request, self)
        )
        rendered = _render(request, record, pending_tasks=0)  # a new session has none
        return Response({**rendered, "session_token": record["session_token"]})

    @extend_schema(responses={200: SessionResponseSerializer, **errors(401, 404)})
    async def retrieve(self, request, pk=None):
        """The session's state, with a fresh ``websocket_url`` (how a client reconnects)."""
        session_id = _held_session_id(request, pk)
        record, pending = (
            await selectors.asession_get_with_pending(session_id=session_id)
            if session_id
            else (None, 0)
        )
        if record is None:
            raise NotFound("Session not found")
        return Response(_render(request, record, pending))

    @extend_schema(responses={200: ClosedSerializer, **errors(401, 404)})
    async def destroy(self, request, pk=None):
        """Close the session: its live socket, on any worker, gets 1000."""
        record = await _session_or_404(request, pk)
        if not await services.session_aclose(session_id=record["id"], reason="deleted"):
            raise NotFound("Session not found")
        return Response({"status": "closed", "session_id": record["id"]})

    @extend_schema(
        parameters=[TaskListQuerySerializer],
        responses={200: TaskResponseSerializer(many=True), **errors(400, 401, 404)},
    )
    @action(detail=True, methods=["get"])
    async def tasks(self, request, pk=None):
        """The session's tasks, oldest first, optionally ``?state=``; a page of ``?limit=``
        (default 100, at most 500) after ``?offset=``."""
        record = await _session_or_404(request, pk)
        query = TaskListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        tasks = await atask_list(session_id=record["id"], **query.validated_data)
        return Response([task_response(t) for t in tasks])

    @extend_schema(responses={200: StatsSerializer, **errors(401, 404)})
    @action(detail=True, methods=["get"])
    async def stats(self, request, pk=None):
        """Aggregate counts, no PII."""
        session_id = _held_session_id(request, pk)
        stats = await selectors.asession_stats(session_id=session_id) if session_id else None
        if stats is None:
            raise NotFound("Session not found")
        return Response(stats)
