"""What a hostile HTTP client can't do: a 500, a file outside static, a redirect away, a
frame around a page, a cached token, a login cookie over plain http (issue 10, "Smaller
ones")."""

import os
import subprocess
import sys

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tasks_app.selectors import task_get
from tests.conftest import KEY_HASH, create_session
from tests.test_settings_guard import ROOT

pytestmark = pytest.mark.django_db(databases=[])


async def asgi_get(path: str, raw_path: bytes | None = None) -> tuple[int, dict, bytes]:
    """A GET through the production ASGI application, as uvicorn hands it over."""
    from voiceproject.asgi import application

    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": raw_path or path.encode(),
        "query_string": b"", "headers": [(b"host", b"testserver")], "http_version": "1.1",
        "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": b""})
    start = await comm.receive_output(10)
    body = b""
    while True:
        message = await comm.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


def test_a_deeply_nested_json_body_on_create_is_a_400_not_a_500(api):
    for body in (
        "[" * 30_000 + "]" * 30_000,
        '{"namespace_id": ' + "[" * 500 + "]" * 500 + "}",
        '{"namespace_id": "u", "key_hash": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
    ):
        response = api.generic("POST", "/api/v1/sessions", body, content_type="application/json")
        assert response.status_code == 400, response.content[:200]
        assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/static/../../../etc/passwd", b"/static/..%2f..%2f..%2fetc/passwd"),
        ("/static/../../../../../../../../etc/passwd", b"/static/%2e%2e/" * 8 + b"etc/passwd"),
        ("/static/../voiceproject/settings.py", b"/static/..%2fvoiceproject/settings.py"),
        ("/static/admin/../../../../../voiceproject/settings.py", None),
    ],
)
async def test_a_static_path_that_climbs_out_of_static_is_refused_never_500(path, raw):
    status, _, body = await asgi_get(path, raw)
    assert status in (400, 404)
    assert b"root:" not in body and b"SECRET_KEY" not in body


async def test_swagger_uis_own_static_files_are_still_served():
    path = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css"
    status, _, body = await asgi_get(path)
    assert status == 200 and b"swagger-ui" in body


@pytest.fixture
def staff(db):
    client = Client()
    client.force_login(User.objects.create_user("ops", password="pw-ops-123", is_staff=True))
    return client


def _draft_task(api) -> str:
    from tasks_app.services import task_create

    session = create_session(api)
    return task_create(session_id=session["id"], task_type="reminder", payload={"text": "x"})["id"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "/\\evil.example/phish",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "not a path",
        "ops:health",
    ],
)
def test_cancel_with_a_next_that_is_not_a_local_path_goes_to_the_tasks_page(staff, api, foreign):
    task_id = _draft_task(api)
    response = staff.post(f"/ops/tasks/{task_id}/cancel", {"next": foreign})
    assert response.status_code == 302
    assert response["Location"] == "/ops/tasks/"
    assert task_get(task_id=task_id)["state"] == "cancelled"


@pytest.mark.django_db
def test_cancel_with_a_local_next_goes_back_there(staff, api):
    task_id = _draft_task(api)
    response = staff.post(f"/ops/tasks/{task_id}/cancel", {"next": "/ops/tasks/?state=draft"})
    assert response.status_code == 302 and response["Location"] == "/ops/tasks/?state=draft"


@pytest.mark.parametrize("path", ["/", "/api/docs/"])
async def test_html_pages_refuse_to_be_framed(path):
    status, headers, _ = await asgi_get(path)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


@pytest.mark.django_db
def test_the_operators_pages_refuse_to_be_framed_too(staff):
    response = staff.get("/ops/")
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_every_api_response_is_no_store_since_it_may_carry_a_token(api):
    created = api.post(
        "/api/v1/sessions", {"namespace_id": "u", "key_hash": KEY_HASH}, format="json"
    )
    assert created.status_code == 200 and "token=" in created.json()["websocket_url"]
    responses = [
        created,
        api.get(f"/api/v1/sessions/{created.json()['id']}"),
        api.get(f"/api/v1/sessions/{created.json()['id']}/tasks"),
        api.get("/api/v1/sessions/not-an-id"),
        api.post("/api/v1/sessions", {"namespace_id": "x y"}, format="json"),
    ]
    for response in responses:
        assert response["Cache-Control"] == "no-store", response.status_code


@pytest.mark.django_db
def test_the_operators_login_and_csrf_cookies_are_secure_with_debug_off():
    assert not settings.DEBUG
    User.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    client = Client(enforce_csrf_checks=False)
    page = client.get("/admin/login/", secure=True)
    assert page.cookies["csrftoken"]["secure"]
    login = client.post(
        "/admin/login/?next=/ops/",
        {"username": "ops", "password": "pw-ops-123"},
        secure=True,
    )
    assert login.status_code == 302
    assert login.cookies["sessionid"]["secure"]


@pytest.mark.parametrize(
    ("env", "secure"),
    [
        ({"SECRET_KEY": "k" * 40}, True),
        ({"DEBUG": "1"}, False),
        ({"SECRET_KEY": "k" * 40, "SECURE_COOKIES": "0"}, False),
        ({"DEBUG": "1", "SECURE_COOKIES": "1"}, True),
    ],
)
def test_secure_cookies_default_to_on_with_debug_off_and_follow_the_setting(env, secure):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "SECURE_COOKIES")
    }
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "voiceproject.settings"},
    )  # fmt: skip
    assert result.stdout.split() == [str(secure), str(secure)], result.stderr
