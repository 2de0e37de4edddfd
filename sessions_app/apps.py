import structlog
from django.apps import AppConfig
from django.conf import settings

logger = structlog.get_logger(__name__)


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "voice_sessions"

    def ready(self):
        """Say at start when sessions are open to anyone who learns an id."""
        if settings.SESSION_AUTH == "off" and not settings.DEBUG:
            logger.warning(
                "session_auth_off",
                message="SESSION_AUTH=off: a session id alone reads, takes over and ends a "
                "session. Use it only for legacy clients on a trusted network.",
            )
