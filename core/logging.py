"""structlog set-up and the privacy filter every log line passes through.

Every record, ours or Django's, uvicorn's, daphne's and channels', is rendered by one
``ProcessorFormatter`` whose chain ends in :func:`redact` before the renderer. So a full id,
a namespace id, a key hash, a token or a transcript cannot reach a log even when a third-party
logger puts one in its message.
"""

import logging
import re

import structlog

# Fields whose values never reach a log, whatever logged them.
SECRET_FIELDS = frozenset(
    {
        "namespace_id",
        "key_hash",
        "key_tag",
        "text",
        "transcript",
        "audio",
        "token",
        "session_token",
        "authorization",
        "result",
        "payload",
    }
)
_UUID = re.compile(
    r"\b([0-9a-fA-F]{8})(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}\b",
)
_TOKEN_QS = re.compile(r"(token=)[^&\s\"']+")
_NAMESPACE_QS = re.compile(r"(namespace_id=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
# A bare secret-shaped run: a session token (64 URL-safe characters) or a hash's 64 hex digits.
_SECRET_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{64}(?![A-Za-z0-9_-])")


def short_id(value: object) -> str:
    """The first 8 characters of an id: the only form in which ids are logged."""
    return str(value)[:8]


def _scrub(text: str) -> str:
    text = _UUID.sub(lambda m: m.group(1) + "~", text)
    text = _TOKEN_QS.sub(r"\1[redacted]", text)
    text = _NAMESPACE_QS.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _SECRET_SHAPED.sub("[redacted]", text)


# A log line has a bounded size whatever a client sends: a field's text is cut after
# MAX_FIELD_CHARS, a traceback's lines after MAX_TRACEBACK_LINE_CHARS and the whole traceback
# after MAX_TRACEBACK_CHARS.
MAX_FIELD_CHARS = 2000
MAX_TRACEBACK_LINE_CHARS = 300
MAX_TRACEBACK_CHARS = 8000
# Django's security loggers (DisallowedHost, SuspiciousOperation, ...) quote what the client
# sent (a Host header, a path, a cookie) in their message and traceback: only the kind of
# refusal is logged.
_SECURITY_LOGGER = "django.security."


def _bound(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} characters cut]"


def _bound_traceback(text: str) -> str:
    lines = (_bound(line, MAX_TRACEBACK_LINE_CHARS) for line in text.splitlines())
    return _bound("\n".join(lines), MAX_TRACEBACK_CHARS)


def _security_event(event_dict: dict) -> dict:
    kind = event_dict["logger"][len(_SECURITY_LOGGER) :]
    kept = {k: v for k, v in event_dict.items() if k in ("level", "logger", "timestamp")}
    return {**kept, "event": "request_refused_as_suspicious", "kind": _bound(kind, 100)}


def redact(_logger, _method, event_dict: dict) -> dict:
    """Drop secret fields, cut ids to 8 characters, scrub ids out of free text, bound sizes."""
    if str(event_dict.get("logger", "")).startswith(_SECURITY_LOGGER):
        return _security_event(event_dict)
    for key in list(event_dict):
        value = event_dict[key]
        if key in SECRET_FIELDS or "token" in key.lower() or "secret" in key.lower():
            event_dict[key] = "[redacted]"
        elif isinstance(value, list | tuple | set | dict):
            event_dict[key] = _scrub(_bound(str(value), MAX_FIELD_CHARS))  # nested: as text
        elif key.endswith("_id") and isinstance(value, str):
            event_dict[key] = short_id(value)
        elif key in ("exception", "stack") and isinstance(value, str):
            event_dict[key] = _scrub(_bound_traceback(value))
        elif isinstance(value, str):
            event_dict[key] = _scrub(_bound(value, MAX_FIELD_CHARS))
    return event_dict


_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def make_formatter(fmt: str = "json") -> structlog.stdlib.ProcessorFormatter:
    """The formatter every handler uses; tests attach it to a capture handler."""
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def build_logging_config(*, fmt: str, level: str) -> dict:
    # Python's warnings (Django's CacheKeyWarning quotes the whole key) go through the same
    # formatter as every other record, never raw to stderr.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": {"()": make_formatter, "fmt": fmt}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # 4xx are answered to the client; they are not operator news.
            "django.request": {"level": "ERROR"},
            "django.channels.server": {"level": "WARNING"},
            "daphne": {"level": "WARNING"},
            # Uvicorn set its own handlers before Django loaded; take its records back, so
            # they are JSON and redacted too. Its access log would print whole session ids
            # and tokens in paths: run it with --no-access-log, and it stays quiet here anyway.
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        },
    }
