from rest_framework import serializers

from tasks_app.states import STATES

TASK_PAGE_DEFAULT = 100
TASK_PAGE_MAX = 500


class TaskListQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=STATES, required=False)
    limit = serializers.IntegerField(
        min_value=1,
        max_value=TASK_PAGE_MAX,
        default=TASK_PAGE_DEFAULT,
        help_text=f"tasks in the page, oldest first (default {TASK_PAGE_DEFAULT})",
    )
    offset = serializers.IntegerField(
        min_value=0, max_value=2**31, default=0, help_text="tasks to skip before the page"
    )


class TaskResponseSerializer(serializers.Serializer):
    """``TaskResponse``: rendered from ``tasks_app.services.task_response``."""

    id = serializers.UUIDField()
    session_id = serializers.UUIDField()
    type = serializers.CharField()
    state = serializers.ChoiceField(choices=STATES)
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    result_available = serializers.BooleanField()
    error_message = serializers.CharField(allow_null=True)
