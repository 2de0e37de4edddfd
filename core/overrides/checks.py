"""System checks that stand in for Django's ``security.W001`` and ``security.W002``.

Django looks for ``django.middleware.security.SecurityMiddleware`` and
``django.middleware.clickjacking.XFrameOptionsMiddleware`` by their dotted paths in
``MIDDLEWARE``; here they sit elsewhere (``middleware.py``), so Django's two checks are
silenced in settings and these look for the arrangement that does their work instead. They
warn exactly when that work would stop: the security headers, and frame refusal on the
operators' pages. Registered at start by ``sessions_app.apps``.
"""

from django.conf import settings
from django.core.checks import Tags, Warning, register

SECURITY = (
    "core.overrides.middleware.SecurityMiddleware",
    "django.middleware.security.SecurityMiddleware",
)
OPERATOR_PAGES = "core.overrides.middleware.OperatorPagesMiddleware"


@register(Tags.security)
def security_middleware_in_place(app_configs=None, **kwargs) -> list[Warning]:
    out = []
    if not any(path in settings.MIDDLEWARE for path in SECURITY):
        out.append(
            Warning(
                "Neither core.overrides.middleware.SecurityMiddleware nor Django's is in "
                "MIDDLEWARE: no nosniff, referrer-policy, no-store or frame refusal headers.",
                id="overrides.W001",
            )
        )
    if OPERATOR_PAGES not in settings.MIDDLEWARE:
        out.append(
            Warning(
                f"{OPERATOR_PAGES} is not in MIDDLEWARE: the operators' pages lose their "
                "session, login and X-Frame-Options middleware.",
                id="overrides.W002",
            )
        )
    return out
