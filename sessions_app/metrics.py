"""The service-wide figures of sessions on /metrics: live sessions by status."""

from prometheus_client.core import GaugeMetricFamily

from core.metrics import REDIS_ERRORS
from sessions_app.selectors import session_status_counts


class SessionsByStatus:
    """Live sessions by status, from the store's index of live sessions."""

    def collect(self):
        family = GaugeMetricFamily("voice_sessions", "Live sessions by status", labels=["status"])
        try:
            counts = session_status_counts()
        except Exception:
            REDIS_ERRORS.inc()
            return
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family
