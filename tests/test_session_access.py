"""Who may touch a session (CONTRACT section 1b): session tokens and one key per namespace.

The expectations come from the contract's text: the detail strings, the status codes, and
"the same answer whether or not the id exists".
"""

import base64
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tasks_app import services as task_services
from tests.conftest import KEY_HASH, bearer, create_session, redis_dump

pytestmark = pytest.mark.django_db(databases=[])

OTHER_KEY_HASH = "sha256:" + "cd" * 32
NOT_A_HOLDER = {"detail": "Invalid session token"}
SESSION_PATHS = [("get", ""), ("delete", ""), ("get", "/tasks"), ("get", "/stats")]
TASK_PATHS = [("get", ""), ("get", "/result"), ("post", "/confirm"), ("post", "/cancel")]


def _call(client: APIClient, method: str, path: str, headers: dict):
    return getattr(client, method)(path, **headers)


def _bad_headers(session: dict, other: dict) -> list[dict]:
    """Every way of not being the holder: no header, malformed ones, someone else's token."""
    token = session["session_token"]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    return [
        {},
        {"HTTP_AUTHORIZATION": ""},
        {"HTTP_AUTHORIZATION": "Bearer"},
        {"HTTP_AUTHORIZATION": "Bearer "},
        {"HTTP_AUTHORIZATION": f"Basic {token}"},
        {"HTTP_AUTHORIZATION": f"Token {token}"},
        {"HTTP_AUTHORIZATION": f"Bearer {flipped}"},
        {"HTTP_AUTHORIZATION": f"Bearer {token}x"},
        {"HTTP_AUTHORIZATION": f"Bearer {token[:-1]}"},
        {"HTTP_AUTHORIZATION": "Bearer " + "A" * 64},
        {"HTTP_AUTHORIZATION": "Bearer \u00e9\u00e9"},
        bearer(other),
    ]


# session tokens -------------------------------------------------------------------------------
def test_the_create_answers_with_a_url_safe_token_of_at_least_128_bits(api, backend):
    tokens = {create_session(api, namespace_id=f"t{i}")["session_token"] for i in range(40)}
    assert len(tokens) == 40
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
        assert len(token) * 6 >= 128  # base64url characters carry 6 bits each


def test_the_token_is_shown_only_by_the_create(api):
    session = create_session(api)
    body = api.get(f"/api/v1/sessions/{session['id']}", **bearer(session)).json()
    assert "session_token" not in body
    assert session["session_token"] not in str(body)


@pytest.mark.parametrize(("method", "path"), SESSION_PATHS)
def test_a_session_path_without_its_token_is_401_whether_or_not_the_id_exists(
    api, backend, method, path
):
    session, other = create_session(api), create_session(api, namespace_id="other")
    for sid in (session["id"], str(uuid.uuid4()), "nope", "0" * 200, "%00"):
        for headers in _bad_headers(session, other):
            response = _call(api, method, f"/api/v1/sessions/{sid}{path}", headers)
            assert response.status_code == 401, (sid, headers)
            assert response.json() == NOT_A_HOLDER, (sid, headers)
            assert response["WWW-Authenticate"].startswith("Bearer")
    # nothing was touched: the holder still finds the session as it was
    held = api.get(f"/api/v1/sessions/{session['id']}", **bearer(session))
    assert held.status_code == 200 and held.json()["status"] == "created"


@pytest.mark.parametrize(("method", "path"), SESSION_PATHS)
def test_the_right_token_on_a_deleted_session_is_404(api, backend, method, path):
    session = create_session(api)
    assert api.delete(f"/api/v1/sessions/{session['id']}", **bearer(session)).status_code == 200
    response = _call(api, method, f"/api/v1/sessions/{session['id']}{path}", bearer(session))
    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}


def test_a_token_opens_only_the_session_it_was_made_for(api):
    one, two = create_session(api), create_session(api, namespace_id="two")
    assert api.get(f"/api/v1/sessions/{one['id']}", **bearer(one)).status_code == 200
    assert api.get(f"/api/v1/sessions/{two['id']}", **bearer(one)).status_code == 401
    assert api.get(f"/api/v1/sessions/{one['id']}", **bearer(two)).status_code == 401


def test_a_token_signed_under_another_secret_key_is_refused(api):
    session = create_session(api)
    with override_settings(SECRET_KEY="another-deployment-secret-key-0123456789"):
        other = create_session(api, namespace_id="elsewhere")
    forged = {"HTTP_AUTHORIZATION": f"Bearer {other['session_token']}"}
    assert api.get(f"/api/v1/sessions/{other['id']}", **forged).status_code == 401
    assert api.get(f"/api/v1/sessions/{session['id']}", **bearer(session)).status_code == 200


def test_a_token_with_the_id_of_another_session_spliced_in_is_refused(api):
    """The token binds its session id under the MAC: swapping the id in breaks it."""
    one, two = create_session(api), create_session(api, namespace_id="two")
    raw = base64.urlsafe_b64decode(one["session_token"] + "=" * (-len(one["session_token"]) % 4))
    spliced = uuid.UUID(two["id"]).bytes + raw[16:]
    token = base64.urlsafe_b64encode(spliced).rstrip(b"=").decode()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert api.get(f"/api/v1/sessions/{two['id']}", **headers).status_code == 401


@pytest.mark.parametrize(("method", "path"), TASK_PATHS)
def test_a_task_path_without_its_sessions_token_is_401_whether_or_not_the_task_exists(
    api, backend, method, path
):
    session, other = create_session(api), create_session(api, namespace_id="other")
    task = task_services.task_create(
        session_id=session["id"], task_type="reminder", payload={"text": "x", "due_at": 0}
    )
    for tid in (task["id"], str(uuid.uuid4()), "nope", "x" * 300):
        for headers in _bad_headers(session, other):
            response = _call(api, method, f"/api/v1/tasks/{tid}{path}", headers)
            assert response.status_code == 401, (tid, headers)
            assert response.json() == NOT_A_HOLDER
    held = api.get(f"/api/v1/tasks/{task['id']}", **bearer(session))
    assert held.status_code == 200 and held.json()["state"] == "draft", "nothing was touched"


@pytest.mark.parametrize(("method", "path"), TASK_PATHS)
def test_a_task_gone_past_its_ttl_is_404_to_its_sessions_token(api, backend, method, path):
    session = create_session(api)
    with override_settings(TASK_TTL_HOURS=0.3 / 3600):
        task = task_services.task_create(
            session_id=session["id"], task_type="reminder", payload={"text": "x", "due_at": 0}
        )
        time.sleep(0.5)
    response = _call(api, method, f"/api/v1/tasks/{task['id']}{path}", bearer(session))
    assert response.status_code == 404
    assert response.json() == {"detail": "Task not found"}


def test_a_task_stays_readable_with_its_sessions_token_after_the_session_is_deleted(api):
    session = create_session(api)
    task = task_services.task_create(
        session_id=session["id"], task_type="reminder", payload={"text": "x", "due_at": 0}
    )
    assert api.delete(f"/api/v1/sessions/{session['id']}", **bearer(session)).status_code == 200
    assert api.get(f"/api/v1/tasks/{task['id']}", **bearer(session)).status_code == 200
    assert api.get(f"/api/v1/tasks/{task['id']}").status_code == 401


def test_the_connect_url_is_handed_only_to_the_holder(api, backend):
    session = create_session(api)
    refused = api.get(f"/api/v1/sessions/{session['id']}")
    assert "websocket_url" not in refused.json() and "token=" not in refused.content.decode()


@override_settings(SESSION_AUTH="off")
def test_with_session_auth_off_the_id_alone_is_enough_as_in_the_seed(api, backend):
    session = create_session(api)
    task = task_services.task_create(session_id=session["id"], task_type="note", payload={})
    assert api.get(f"/api/v1/sessions/{session['id']}").status_code == 200
    assert api.get(f"/api/v1/sessions/{session['id']}/stats").status_code == 200
    assert api.get(f"/api/v1/tasks/{task['id']}").status_code == 200
    assert api.get(f"/api/v1/sessions/{uuid.uuid4()}").status_code == 404
    assert api.get(f"/api/v1/tasks/{uuid.uuid4()}").status_code == 404
    assert api.delete(f"/api/v1/sessions/{session['id']}").status_code == 200


# one key per namespace ---------------------------------------------------------------------------
def _create(client, namespace_id: str, key_hash: str):
    return client.post(
        "/api/v1/sessions", {"namespace_id": namespace_id, "key_hash": key_hash}, format="json"
    )


def test_a_namespace_with_live_sessions_refuses_another_key_hash(api, backend):
    first = _create(api, "shared", KEY_HASH)
    assert first.status_code == 200
    intruder = _create(api, "shared", OTHER_KEY_HASH)
    assert intruder.status_code == 401
    assert intruder.json() == {"detail": "Invalid encryption key hash"}
    # the intruder took no slot: the owner still gets all of theirs
    for _ in range(4):
        assert _create(api, "shared", KEY_HASH).status_code == 200
    assert _create(api, "shared", KEY_HASH).status_code == 429
    assert _create(api, "shared", OTHER_KEY_HASH).status_code == 401, "full, and still 401"


def test_once_no_session_is_live_a_new_key_hash_takes_the_namespace(api, backend):
    old = _create(api, "rotating", KEY_HASH).json()
    assert _create(api, "rotating", OTHER_KEY_HASH).status_code == 401
    assert api.delete(f"/api/v1/sessions/{old['id']}", **bearer(old)).status_code == 200
    rotated = _create(api, "rotating", OTHER_KEY_HASH)
    assert rotated.status_code == 200, "key rotation: the namespace had no live session"
    assert _create(api, "rotating", KEY_HASH).status_code == 401, "the old key is out now"


def test_an_abandoned_session_stops_holding_the_namespace_key(api, backend):
    with override_settings(CONNECT_WINDOW_SECONDS=0.3):
        assert _create(api, "left", KEY_HASH).status_code == 200
        time.sleep(0.5)
        assert _create(api, "left", OTHER_KEY_HASH).status_code == 200


def test_other_namespaces_are_not_affected_by_a_namespaces_key(api, backend):
    assert _create(api, "alice", KEY_HASH).status_code == 200
    assert _create(api, "bob", OTHER_KEY_HASH).status_code == 200


def test_concurrent_creates_with_two_keys_leave_the_namespace_with_one(backend):
    barrier = threading.Barrier(12)

    def attempt(i):
        barrier.wait()
        key_hash = KEY_HASH if i % 2 else OTHER_KEY_HASH
        return key_hash, _create(APIClient(), "contested", key_hash).status_code

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(attempt, range(12)))
    winners = {key for key, code in results if code == 200}
    assert len(winners) == 1, results
    assert sum(code == 200 for _, code in results) == 5
    assert {code for key, code in results if key not in winners} == {401}


@override_settings(ENCRYPTION_ENABLED=False)
def test_the_namespace_key_rule_holds_with_encryption_off(api, backend):
    assert _create(api, "plain", "any-key").status_code == 200
    assert _create(api, "plain", "another-key").status_code == 401


def test_a_key_hash_with_a_trailing_newline_is_refused(api):
    response = _create(api, "nl", KEY_HASH + "\n")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid encryption key hash"}


def test_redis_keeps_neither_the_key_hash_nor_the_token(api, redis_backend):
    session = create_session(api, namespace_id="dumped")
    dump = b" ".join(k + b" " + v for k, v in redis_dump(redis_backend).items())
    assert dump, "the dump must hold the session"
    for secret in (KEY_HASH, KEY_HASH[7:], session["session_token"], "dumped"):
        assert secret.encode() not in dump, secret


def test_a_secret_key_rotation_keeps_live_sessions_working_with_the_old_key_as_fallback(
    api, backend
):
    """docs/api.md: SECRET_KEY_FALLBACKS keeps tokens, sealed values and the key rule."""
    from django.conf import settings

    old = settings.SECRET_KEY
    session = create_session(api, namespace_id="rotating-key")
    with override_settings(
        SECRET_KEY="the-next-secret-key-0123456789abcdef", SECRET_KEY_FALLBACKS=[old]
    ):
        held = api.get(f"/api/v1/sessions/{session['id']}", **bearer(session))
        assert held.status_code == 200 and held.json()["namespace_id"] == "rotating-key"
        assert _create(api, "rotating-key", KEY_HASH).status_code == 200, "the same key"
        assert _create(api, "rotating-key", OTHER_KEY_HASH).status_code == 401
        ended = api.delete(f"/api/v1/sessions/{session['id']}", **bearer(session))
        assert ended.status_code == 200
