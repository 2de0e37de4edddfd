from rest_framework import serializers

from tasks_app.states import STATES


class TaskListQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=STATES, required=False)


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
