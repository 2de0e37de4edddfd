"""``/api/v1/tasks``: read a task, its result, confirm or cancel it."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from core.access import task_holder_check, task_holder_confirm
from core.errors import Conflict
from core.ids import parse_uuid
from core.openapi import errors
from core.overrides.viewsets import AsyncViewSet
from tasks_app import selectors, services
from tasks_app.errors import TaskNotFound
from tasks_app.serializers import TaskResponseSerializer


def _found(record: dict | None) -> dict:
    if record is None:
        raise TaskNotFound()
    return record


def _held_task_id(request, pk: str) -> str | None:
    """The task id of the path, once the request holds its session's token (401 otherwise)."""
    task_id = parse_uuid(pk)
    task_holder_check(request, task_id=task_id)
    return task_id


async def _atask_or_404(request, pk: str) -> dict:
    task_id = _held_task_id(request, pk)
    record = await selectors.atask_get(task_id=task_id) if task_id else None
    return task_holder_confirm(request, _found(record))


class TaskViewSet(AsyncViewSet):
    lookup_value_regex = "[^/]+"

    @extend_schema(responses={200: TaskResponseSerializer, **errors(401, 404)})
    async def retrieve(self, request, pk=None):
        """One task."""
        return Response(services.task_response(await _atask_or_404(request, pk)))

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **errors(401, 404, 409)})
    @action(detail=True, methods=["get"])
    async def result(self, request, pk=None):
        """The handler's result; 409 while the task has none."""
        record = await _atask_or_404(request, pk)
        result = selectors.task_result(record=record)
        if result is None:
            raise Conflict(f"Task is {record['state']}; it has no result")
        return Response(result)

    @extend_schema(request=None, responses={200: TaskResponseSerializer, **errors(401, 404, 409)})
    @action(detail=True, methods=["post"])
    async def confirm(self, request, pk=None):
        """``draft`` to ``queued``."""
        record = await _atask_or_404(request, pk)
        return Response(services.task_response(await services.atask_confirm(task_id=record["id"])))

    @extend_schema(request=None, responses={200: TaskResponseSerializer, **errors(401, 404, 409)})
    @action(detail=True, methods=["post"])
    async def cancel(self, request, pk=None):
        """Any pending state to ``cancelled``."""
        record = await _atask_or_404(request, pk)
        return Response(services.task_response(await services.atask_cancel(task_id=record["id"])))
