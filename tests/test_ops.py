"""``/ops/``: staff-only pages that show live sessions and tasks, and act through services."""

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from ops import store as ops_store
from tests.conftest import KEY_HASH, connect, create_session, hold, receive_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    user = User.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


PAGES = ["/ops/", "/ops/tasks/", "/ops/health/"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_users_are_sent_to_the_login(path):
    response = Client().get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", PAGES)
def test_users_who_are_not_staff_are_refused(path):
    client = Client()
    client.force_login(User.objects.create_user("someone", password="pw-someone-1"))
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_actions_refuse_anonymous_posts(api):
    session = hold(api, create_session(api))
    response = Client().post(f"/ops/sessions/{session['id']}/close")
    assert response.status_code == 302
    assert api.get(f"/api/v1/sessions/{session['id']}").status_code == 200


def test_the_sessions_page_lists_live_sessions_with_truncated_ids_only(staff, api, backend):
    ids = [create_session(api, namespace_id="tenant-secret-namespace")["id"] for _ in range(3)]
    page = staff.get("/ops/").content.decode()
    assert "3 live sessions" in page
    for sid in ids:
        assert sid[:8] in page
    assert "tenant-secret-namespace" not in page
    assert 'id="site-name"' in page or "Django administration" in page  # the admin's look


def test_the_session_page_shows_figures_and_tasks_but_no_text(staff, api):
    session = hold(api, create_session(api))
    from tasks_app.services import task_create

    task_create(session_id=session["id"], task_type="note", payload={"text": "door code 4711"})
    page = staff.get(f"/ops/sessions/{session['id']}/").content.decode()
    assert session["id"][:8] in page and "note" in page
    assert "4711" not in page and "door code" not in page
    assert staff.get("/ops/sessions/not-a-session/").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_closing_a_session_from_ops_closes_its_live_socket(staff, api):
    from asgiref.sync import sync_to_async

    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    response = await sync_to_async(staff.post)(f"/ops/sessions/{session['id']}/close")
    assert response.status_code == 302
    closed = (await receive_until(comm, "session.closed"))[-1]
    assert closed["reason"] == "deleted"
    out = await comm.receive_output(timeout=5)
    assert (out["type"], out["code"]) == ("websocket.close", 1000)


def test_cancelling_a_task_from_ops_uses_the_task_state_machine(staff, api):
    from tasks_app.services import task_create

    session = hold(api, create_session(api))
    draft = task_create(
        session_id=session["id"], task_type="reminder", payload={"text": "x", "due_at": 1e10}
    )
    staff.post(f"/ops/tasks/{draft['id']}/cancel")
    assert api.get(f"/api/v1/tasks/{draft['id']}").json()["state"] == "cancelled"
    response = staff.post(f"/ops/tasks/{draft['id']}/cancel", follow=True)
    assert "cannot become cancelled" in response.content.decode()


def test_the_tasks_page_filters_by_state_and_type(staff, api):
    from tasks_app.services import task_create

    session = hold(api, create_session(api))
    draft = task_create(
        session_id=session["id"], task_type="reminder", payload={"text": "x", "due_at": 1e10}
    )
    page = staff.get("/ops/tasks/?state=draft").content.decode()
    assert draft["id"][:8] in page
    page = staff.get("/ops/tasks/?state=completed").content.decode()
    assert draft["id"][:8] not in page
    page = staff.get("/ops/tasks/?type=todo").content.decode()
    assert draft["id"][:8] not in page


def test_the_health_page_shows_checks_workers_and_the_recognizer_pool(staff):
    ops_store.worker_seen(worker_id="host-a:123", now=__import__("time").time())
    page = staff.get("/ops/health/").content.decode()
    assert "Cache</th><td>ok" in page and "Channel layer</th><td>ok" in page
    assert "host-a:123" in page and "Recognizers busy" in page
    assert "Session access</th><td>bearer token per session" in page


def test_the_health_page_says_when_sessions_are_open_to_anyone_with_an_id(staff):
    with override_settings(SESSION_AUTH="off"):
        page = staff.get("/ops/health/").content.decode()
    assert "OFF: a session id alone is enough" in page


def test_listing_reads_one_page_of_the_index_not_every_session(staff, api, backend):
    for i in range(60):
        create_session(api, namespace_id=f"n{i}")
    page = staff.get("/ops/").content.decode()
    assert "60 live sessions" in page
    assert page.count('data-session="') == 50
    assert staff.get("/ops/?page=2").content.decode().count('data-session="') == 10


def test_ops_actions_need_a_csrf_token(api):
    session = hold(api, create_session(api))
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("ops2", password="pw-ops-456", is_staff=True))
    refused = client.post(f"/ops/sessions/{session['id']}/close")
    assert refused.status_code == 403
    assert api.get(f"/api/v1/sessions/{session['id']}").status_code == 200
    page = client.get("/ops/")
    token = page.cookies["csrftoken"].value
    done = client.post(f"/ops/sessions/{session['id']}/close", HTTP_X_CSRFTOKEN=token)
    assert done.status_code == 302
    assert api.get(f"/api/v1/sessions/{session['id']}").status_code == 404


def test_the_api_sets_no_cookies(api):
    response = api.post("/api/v1/sessions", {"namespace_id": "u", "key_hash": KEY_HASH})
    assert response.status_code == 200 and not response.cookies
