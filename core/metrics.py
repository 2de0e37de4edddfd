"""Prometheus metrics at ``/metrics``: per process, no per-session labels, no PII.

Each daphne worker exposes its own figures; scrape every worker (Prometheus sums them).
``voice_sessions`` is the exception: it is read from the shared store, so every worker reports
the same, service-wide numbers (aggregate it with ``max``, not ``sum``).
"""

import ipaddress

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series: they double the output and say little
REGISTRY = CollectorRegistry(auto_describe=True)

SOCKETS_OPEN = Gauge("voice_sockets_open", "Sockets attached to a session", registry=REGISTRY)
AUDIO_FRAMES_RECEIVED = Counter(
    "voice_audio_frames_received", "Audio frames received", registry=REGISTRY
)
AUDIO_FRAMES_PROCESSED = Counter(
    "voice_audio_frames_processed", "Audio frames decoded and run through VAD", registry=REGISTRY
)
UTTERANCES = Counter("voice_utterances", "Final utterances handled", ["source"], registry=REGISTRY)
RECOGNITION_LATENCY = Histogram(
    "voice_recognition_latency_seconds",
    "From the end of an utterance to its final transcript",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
    registry=REGISTRY,
)
TASK_STATES = Counter(
    "voice_task_transitions", "Tasks entering a state", ["state"], registry=REGISTRY
)
SOCKET_CLOSES = Counter(
    "voice_socket_closes", "Sockets closed by the server, by close code", ["code"],
    registry=REGISTRY,
)  # fmt: skip
REDIS_ERRORS = Counter(
    "voice_redis_errors", "Calls to Redis that failed or timed out", registry=REGISTRY
)


def register_collector(collector) -> None:
    """Add a collector of the wiring's (an app's service-wide figures) to this registry."""
    REGISTRY.register(collector)


def _allowed(address: str) -> bool:
    """Whether ``METRICS_ALLOWED_IPS`` lets this address read /metrics (empty: everyone)."""
    networks = settings.METRICS_ALLOWED_IPS
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def metrics_view(request):
    """Prometheus text; with ``METRICS_ALLOWED_IPS`` set, 404 to every other address."""
    if not _allowed(request.META.get("REMOTE_ADDR", "")):
        return JsonResponse({"detail": "Not found"}, status=404)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
