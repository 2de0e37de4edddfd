"""The fenced framework overrides (core/overrides/README.md) and the versions they copy."""

import channels
import django
import pytest
import rest_framework

from tests.conftest import create_session

pytestmark = pytest.mark.django_db(databases=[])

# The versions each copy in core/overrides was made from. An upgrade past one of them fails
# here on purpose: read the new code, carry the change over or delete the override, then move
# the pin (and the README's "made from").
MADE_FROM = {"django": (5, 2), "rest_framework": (3, 16), "channels": (4, 3)}


def _minor(version: str) -> tuple[int, int]:
    major, minor, *_ = version.split(".")
    return int(major), int(minor)


@pytest.mark.parametrize(
    ("name", "installed"),
    [
        ("django", django.__version__),
        ("rest_framework", rest_framework.VERSION),
        ("channels", channels.__version__),
    ],
)
def test_the_frameworks_are_the_versions_the_overrides_were_copied_from(name, installed):
    assert _minor(installed) == MADE_FROM[name], (
        f"{name} {installed}: review core/overrides/README.md before moving the pin"
    )


def test_the_silenced_security_checks_stand_for_headers_really_sent(api):
    """security.W001-W003 are silenced only because our middleware subclass does their job."""
    response = api.post(
        "/api/v1/sessions", {"namespace_id": "hdr", "key_hash": "sha256:" + "ab" * 32}
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cache-Control"] == "no-store"
    page = api.get("/")
    assert page["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page["Content-Security-Policy"]
    assert create_session(api, namespace_id="still-served")["status"] == "created"


def test_the_checks_standing_in_for_the_silenced_ones_pass_as_configured_and_warn_without():
    from django.core.checks import run_checks
    from django.test import override_settings

    def ids() -> set[str]:
        return {m.id for m in run_checks(tags=["security"])}

    assert not {"overrides.W001", "overrides.W002"} & ids()
    with override_settings(MIDDLEWARE=[]):
        assert {"overrides.W001", "overrides.W002"} <= ids()
