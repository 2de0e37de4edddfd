from rest_framework import serializers

NAMESPACE_RE = r"^[A-Za-z0-9._:-]{1,128}$"
PRINTABLE_RE = r"^[\x20-\x7e]*$"


class _StrictText:
    """Text fields that refuse numbers and booleans instead of converting them."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextField(_StrictText, serializers.CharField):
    pass


class PatternField(_StrictText, serializers.RegexField):
    pass


class TimezoneField(TextField):
    """An IANA time zone name, such as ``Europe/Berlin`` (default ``UTC``)."""

    default_error_messages = {"unknown_zone": "Unknown time zone: use an IANA name."}

    def to_internal_value(self, data):
        from core.clock import zone_valid

        value = super().to_internal_value(data)
        if not zone_valid(value):
            self.fail("unknown_zone")
        return value


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only: no ``"yes"``, ``1`` or ``"false"`` read as a boolean."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class SessionCreateSerializer(serializers.Serializer):
    """The create body. The key hash's format is checked by the service (401, as the seed)."""

    namespace_id = PatternField(NAMESPACE_RE, max_length=128)
    key_hash = TextField(max_length=256, trim_whitespace=False)
    device_type = PatternField(PRINTABLE_RE, max_length=32, required=False, default="web")
    client_version = PatternField(
        PRINTABLE_RE,
        max_length=32,
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
    )
    timezone = TimezoneField(max_length=64, required=False, default="UTC")
    intents = StrictBooleanField(
        required=False,
        default=True,
        help_text="false: transcription only; final transcripts make no intents, tasks or "
        "replies (for OpenAI-Realtime transcription clients, docs/protocol.md).",
    )


class SessionResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    namespace_id = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.CharField()
    websocket_url = serializers.CharField(allow_null=True)
    expires_at = serializers.CharField()
    message_count = serializers.IntegerField()
    pending_tasks_count = serializers.IntegerField()
    timezone = serializers.CharField()
    intents = serializers.BooleanField()


class SessionCreatedSerializer(SessionResponseSerializer):
    """The create's answer: a ``SessionResponse`` and, shown only here, the bearer token."""

    session_token = serializers.CharField(
        help_text="Send as `Authorization: Bearer <session_token>` on every other request."
    )


class ClosedSerializer(serializers.Serializer):
    status = serializers.CharField(default="closed")
    session_id = serializers.UUIDField()


class StatsSerializer(serializers.Serializer):
    session_id_truncated = serializers.CharField()
    status = serializers.CharField()
    age_seconds = serializers.FloatField()
    message_count = serializers.IntegerField()
    pending_tasks_count = serializers.IntegerField()
    audio_chunks_received = serializers.IntegerField()
    audio_chunks_processed = serializers.IntegerField()
    device_type = serializers.CharField()
