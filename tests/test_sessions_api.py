"""The sessions REST API keeps the seed's wire contract (CONTRACT section 1)."""

import re
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import override_settings

from core import clock
from tests.conftest import KEY_HASH, bearer, create_session, hold

pytestmark = pytest.mark.django_db(databases=[])

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_create_returns_the_seed_fields_and_a_tokenized_websocket_url(api, backend):
    body = create_session(api, namespace_id="ns:alpha.1", device_type="ios", client_version="2.1")
    assert uuid.UUID(body["id"]).version == 4
    assert body["namespace_id"] == "ns:alpha.1"
    assert body["status"] == "created"
    assert ISO_UTC.match(body["created_at"])
    url = urlparse(body["websocket_url"])
    assert (url.scheme, url.netloc, url.path) == ("ws", "testserver", "/ws/voice")
    query = parse_qs(url.query)
    assert query["session_id"] == [body["id"]]
    assert len(query["token"][0]) > 20
    assert body["message_count"] == 0 and body["pending_tasks_count"] == 0


def test_websocket_url_is_wss_behind_an_https_proxy(api):
    response = api.post(
        "/api/v1/sessions",
        {"namespace_id": "u", "key_hash": KEY_HASH},
        format="json",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_HOST="localhost",
    )
    assert response.json()["websocket_url"].startswith("wss://localhost/ws/voice?")


def test_a_host_outside_allowed_hosts_is_refused_with_400(api):
    response = api.post(
        "/api/v1/sessions",
        {"namespace_id": "u", "key_hash": KEY_HASH},
        format="json",
        HTTP_HOST="evil.example",
    )
    assert response.status_code == 400


def test_trailing_slash_is_optional_on_every_path(api):
    body = hold(api, create_session(api))
    sid = body["id"]
    for path in ("", "/tasks", "/stats"):
        assert api.get(f"/api/v1/sessions/{sid}{path}").status_code == 200
        assert api.get(f"/api/v1/sessions/{sid}{path}/").status_code == 200
    assert (
        api.post("/api/v1/sessions/", {"namespace_id": "u", "key_hash": KEY_HASH}).status_code
        == 200
    )


def test_every_get_hands_out_a_fresh_token(api, session):
    first = api.get(f"/api/v1/sessions/{session['id']}").json()["websocket_url"]
    second = api.get(f"/api/v1/sessions/{session['id']}").json()["websocket_url"]
    assert first != second != session["websocket_url"]


def test_invalid_key_hash_gets_the_seeds_401(api):
    for bad in ("md5:abc", "sha256:" + "AB" * 32, "sha256:" + "a" * 63, ""):
        response = api.post(
            "/api/v1/sessions", {"namespace_id": "u", "key_hash": bad}, format="json"
        )
        assert response.status_code in (400, 401), bad
        if bad:
            assert response.status_code == 401
            assert response.json() == {"detail": "Invalid encryption key hash"}


@override_settings(ENCRYPTION_ENABLED=False)
def test_any_key_hash_passes_when_encryption_is_off(api):
    response = api.post("/api/v1/sessions", {"namespace_id": "u", "key_hash": "x"}, format="json")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": "", "key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": "a" * 129, "key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": "white space", "key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": 12, "key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": ["u"], "key_hash": KEY_HASH}, "namespace_id"),
        ({"namespace_id": "u"}, "key_hash"),
        ({"namespace_id": "u", "key_hash": 5}, "key_hash"),
        ({"namespace_id": "u", "key_hash": "x" * 300}, "key_hash"),
        ({"namespace_id": "u", "key_hash": KEY_HASH, "device_type": "x" * 33}, "device_type"),
        ({"namespace_id": "u", "key_hash": KEY_HASH, "device_type": "tab\there"}, "device_type"),
        ({"namespace_id": "u", "key_hash": KEY_HASH, "device_type": True}, "device_type"),
        ({"namespace_id": "u", "key_hash": KEY_HASH, "client_version": "9" * 33}, "client_version"),
    ],
)
def test_bad_create_bodies_get_field_errors(api, body, field):
    response = api.post("/api/v1/sessions", body, format="json")
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize("raw", [b"{bad", b"[1, 2]", b'"text"', b"null", b"\xff\xfe"])
def test_malformed_json_gets_400_not_500(api, raw):
    response = api.generic("POST", "/api/v1/sessions", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()


def test_an_oversized_body_gets_413(api):
    raw = b'{"namespace_id": "' + b"a" * 70_000 + b'"}'
    response = api.generic("POST", "/api/v1/sessions", raw, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


def test_delete_closes_and_then_the_session_is_gone(backend, api, session):
    sid = session["id"]
    response = api.delete(f"/api/v1/sessions/{sid}")
    assert response.status_code == 200
    assert response.json() == {"status": "closed", "session_id": sid}
    assert api.get(f"/api/v1/sessions/{sid}").status_code == 404
    assert api.delete(f"/api/v1/sessions/{sid}").status_code == 404


def test_stats_are_aggregates_without_pii(api, session):
    stats = api.get(f"/api/v1/sessions/{session['id']}/stats").json()
    assert stats == {
        "session_id_truncated": session["id"][:8],
        "status": "created",
        "age_seconds": stats["age_seconds"],
        "message_count": 0,
        "pending_tasks_count": 0,
        "audio_chunks_received": 0,
        "audio_chunks_processed": 0,
        "device_type": "web",
    }
    assert 0 <= stats["age_seconds"] < 5
    assert "user-1" not in str(stats)


def test_unknown_task_state_filter_is_400(api, session):
    response = api.get(f"/api/v1/sessions/{session['id']}/tasks?state=bogus")
    assert response.status_code == 400
    assert "state" in response.json()


def test_session_not_connected_within_the_window_is_gone(api, backend):
    with override_settings(CONNECT_WINDOW_SECONDS=0.3):
        body = hold(api, create_session(api))
        import time

        time.sleep(0.5)
        assert api.get(f"/api/v1/sessions/{body['id']}").status_code == 404


def test_a_session_past_its_life_reads_as_closed(api, session):
    clock.advance(24 * 3600 + 1)
    body = api.get(f"/api/v1/sessions/{session['id']}").json()
    assert body["status"] == "closed"
    assert body["websocket_url"] is None


def test_session_creates_are_throttled_per_client_ip(backend, api):
    with override_settings(SESSION_CREATE_RATE="3/min"):
        body = {"namespace_id": "busy", "key_hash": KEY_HASH}
        for i in range(3):
            ns = {"namespace_id": f"busy-{i}", "key_hash": KEY_HASH}
            assert api.post("/api/v1/sessions", ns, REMOTE_ADDR="10.0.0.1").status_code == 200
        refused = api.post("/api/v1/sessions", body, REMOTE_ADDR="10.0.0.1")
        assert refused.status_code == 429
        assert "throttled" in refused.json()["detail"]
        assert int(refused["Retry-After"]) > 0
        other = api.post("/api/v1/sessions", body, REMOTE_ADDR="10.0.0.2")
        assert other.status_code == 200
        held = bearer(other.json())
        assert api.get(f"/api/v1/sessions/{other.json()['id']}", **held).status_code == 200
