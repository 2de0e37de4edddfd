"""OpenAPI helpers shared by the apps' viewsets (the schema is at ``/api/schema/``)."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error but a 400 with field errors: ``{"detail": "..."}``."""

    detail = serializers.CharField()


def errors(*codes: int) -> dict:
    """OpenAPI responses for the error codes an endpoint can answer (plus 503: Redis down)."""
    texts = {
        400: "Field errors, malformed JSON, or a Host outside ALLOWED_HOSTS",
        401: "Invalid session token (or, on the create, Invalid encryption key hash)",
        404: "Not found",
        409: "The task's state does not allow it",
        413: "Request body too large",
        429: "Maximum N concurrent sessions allowed, or too many creates from this client",
        503: "Session state is unavailable (Redis unreachable)",
    }
    out = {c: OpenApiResponse(ErrorSerializer, description=texts[c]) for c in (*codes, 503)}
    if 400 in codes:
        out[400] = OpenApiResponse(OpenApiTypes.OBJECT, description=texts[400])
    return out


class AutoSchema(SpectacularAutoSchema):
    """Every API action needs the session's bearer token, but a viewset's ``open_actions``."""

    def get_auth(self):
        if getattr(self.view, "action", None) in getattr(self.view, "open_actions", ()):
            return []
        return [{"sessionToken": []}]
