"""A JSON parser that refuses bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with 413.

DRF's own parser reads the whole stream, whatever its size; this one stops reading at the
limit, so a huge body costs the server no more than the limit. A body nested deeper than
``MAX_JSON_DEPTH`` (no request of this API nests deeper than 2) is a 400, never the
``RecursionError`` that 30,000 ``[`` would raise in ``json.loads`` or in any code that walks
the value afterwards; so are integers of more than 4,300 digits (Python's own limit).
"""

import json

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large"


MAX_JSON_DEPTH = 32


def _nested_deeper_than(value, limit: int) -> bool:
    """Whether ``value`` has containers nested more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise BodyTooLarge()
        try:
            data = json.loads(raw.decode("utf-8"))
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if _nested_deeper_than(data, MAX_JSON_DEPTH):
            raise ParseError("JSON parse error - nested too deeply")
        return data
