import structlog
from django.apps import AppConfig
from django.conf import settings

logger = structlog.get_logger(__name__)


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "voice_sessions"

    def ready(self):
        """Register this app's figures and event path; say if sessions are open to anyone."""
        from core import events, metrics
        from core.overrides import checks  # noqa: F401  (registers the stand-in checks)
        from sessions_app import services
        from sessions_app.metrics import SessionsByStatus

        metrics.register_collector(SessionsByStatus())
        events.register(emit=services.session_aemit, message_add=services.asession_message_add)
        if settings.SESSION_AUTH == "off" and not settings.DEBUG:
            logger.warning(
                "session_auth_off",
                message="SESSION_AUTH=off: a session id alone reads, takes over and ends a "
                "session. Use it only for legacy clients on a trusted network.",
            )
