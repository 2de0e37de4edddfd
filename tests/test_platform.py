"""What the platform and client developers read: probes, metrics and the OpenAPI schema."""

import asyncio

import pytest
import yaml

pytestmark = pytest.mark.django_db(databases=[])


def test_healthz_says_the_process_is_up(api):
    response = api.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_is_ready_when_cache_and_channel_layer_answer(backend, api):
    from tests.conftest import aget

    response = await aget(api, "/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


async def test_readyz_is_503_with_the_reason_when_redis_is_down(dead_redis, api):
    from tests.conftest import aget

    response = await aget(api, "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["failing"]) == {"cache", "channel_layer"}


def test_the_openapi_schema_covers_every_endpoint_with_its_errors(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = schema["paths"]
    expected = {
        ("/api/v1/sessions/", "post"): {"200", "400", "401", "413", "429", "503"},
        ("/api/v1/sessions/{id}/", "get"): {"200", "401", "404", "503"},
        ("/api/v1/sessions/{id}/", "delete"): {"200", "401", "404", "503"},
        ("/api/v1/sessions/{id}/tasks/", "get"): {"200", "400", "401", "404", "503"},
        ("/api/v1/sessions/{id}/stats/", "get"): {"200", "401", "404", "503"},
        ("/api/v1/tasks/{id}/", "get"): {"200", "401", "404", "503"},
        ("/api/v1/tasks/{id}/result/", "get"): {"200", "401", "404", "409", "503"},
        ("/api/v1/tasks/{id}/confirm/", "post"): {"200", "401", "404", "409", "503"},
        ("/api/v1/tasks/{id}/cancel/", "post"): {"200", "401", "404", "409", "503"},
    }
    for (path, method), codes in expected.items():
        assert set(paths[path][method]["responses"]) == codes, (path, method)
    # CONTRACT 1b: a bearer scheme, required everywhere but on the create.
    schemes = schema["components"]["securitySchemes"]
    assert schemes["sessionToken"]["type"] == "http"
    assert schemes["sessionToken"]["scheme"] == "bearer"
    for path, method in expected:
        security = paths[path][method].get("security", [])
        if (path, method) == ("/api/v1/sessions/", "post"):
            assert {"sessionToken": []} not in security, "the create needs no token"
        else:
            assert security == [{"sessionToken": []}], (path, method)


def test_swagger_ui_is_served_without_a_cdn(api):
    import re

    response = api.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    # Every script, style and icon comes from this service, and no absolute URL is named.
    # (A plain "cdn" check was flaky: the page's random CSRF token can contain those letters.)
    assert all(a.startswith("/static/") for a in assets), assets
    assert not re.search(r"https?://", page)


async def test_metrics_have_their_names_and_types_after_a_session_ran(backend, api):
    import re

    from tests.conftest import aget, connect, create_session, hold, receive_until
    from tests.test_speech import FAST, final_for, load, stream

    session = hold(api, create_session(api))
    with FAST:
        comm, _ = await connect(session)
        await stream(comm, load("create_a_task_fix_the_bike"))
        await final_for(comm)
        await receive_until(comm, "response")
        await comm.send_json_to({"type": "text", "text": "what is on my list"})
        await receive_until(comm, "response")
        await asyncio.sleep(0.2)  # one socket tick flushes the audio counts
        text = (await aget(api, "/metrics")).content.decode()
        await comm.disconnect()

    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == {
        "voice_sockets_open": "gauge",
        "voice_audio_frames_received_total": "counter",
        "voice_audio_frames_processed_total": "counter",
        "voice_utterances_total": "counter",
        "voice_recognition_latency_seconds": "histogram",
        "voice_task_transitions_total": "counter",
        "voice_socket_closes_total": "counter",
        "voice_redis_errors_total": "counter",
        "voice_sessions": "gauge",
    }
    assert 'voice_utterances_total{source="speech"}' in text
    assert 'voice_utterances_total{source="text"}' in text
    assert re.search(r'^voice_sessions\{status="(?:processing|connected)"\} 1\.0$', text, re.M)
    assert re.search(r"^voice_audio_frames_received_total [1-9]", text, re.M)
    assert re.search(r"^voice_recognition_latency_seconds_count [1-9]", text, re.M)
    assert session["id"][:8] not in text, "no per-session labels"
    assert "namespace" not in text


def test_the_live_index_counts_sessions_without_scanning_keys(backend, api):
    from sessions_app import selectors
    from tests.conftest import bearer, create_session

    sessions = {s["id"]: s for s in (create_session(api, namespace_id=f"n{i}") for i in range(7))}
    ids = set(sessions)
    total, rows = selectors.session_list(offset=0, limit=5)
    assert total == 7 and len(rows) == 5 and {r["id"] for r in rows} <= ids
    _, rest = selectors.session_list(offset=5, limit=5)
    assert {r["id"] for r in rows} | {r["id"] for r in rest} == ids
    first = sorted(ids)[0]
    assert api.delete(f"/api/v1/sessions/{first}", **bearer(sessions[first])).status_code == 200
    assert selectors.session_list()[0] == 6
    assert selectors.session_status_counts() == {"created": 6}


async def _asgi(method: str, path: str, body: bytes = b"", headers=()) -> dict:
    """One request through the real ASGI application (our handler, not the test client's)."""
    from channels.testing import HttpCommunicator

    from voiceproject.asgi import application

    default = [(b"host", b"testserver"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    comm = HttpCommunicator(application, method, path, body=body, headers=default + list(headers))
    response = await comm.get_response(timeout=5)
    response["headers"] = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return response


async def test_the_api_through_the_asgi_handler_answers_with_its_security_headers(backend):
    import json

    from tests.conftest import KEY_HASH

    body = json.dumps({"namespace_id": "asgi-user", "key_hash": KEY_HASH}).encode()
    created = await _asgi("POST", "/api/v1/sessions", body)
    assert created["status"] == 200, created["body"]
    session = json.loads(created["body"])
    holder = [(b"authorization", f"Bearer {session['session_token']}".encode())]
    got = await _asgi("GET", f"/api/v1/sessions/{session['id']}", headers=holder)
    assert got["status"] == 200 and json.loads(got["body"])["id"] == session["id"]
    for response in (created, got):
        assert response["headers"]["x-content-type-options"] == "nosniff"
        assert response["headers"]["content-type"] == "application/json"
    deleted = await _asgi("DELETE", f"/api/v1/sessions/{session['id']}", headers=holder)
    assert deleted["status"] == 200
    missing = await _asgi("GET", f"/api/v1/sessions/{session['id']}", headers=holder)
    assert missing["status"] == 404 and json.loads(missing["body"]) == {
        "detail": "Session not found"
    }
    anonymous = await _asgi("GET", f"/api/v1/sessions/{session['id']}")
    assert anonymous["status"] == 401 and json.loads(anonymous["body"]) == {
        "detail": "Invalid session token"
    }
    broken = await _asgi("POST", "/api/v1/sessions", b"{not json")
    assert broken["status"] == 400 and "detail" in json.loads(broken["body"])


@pytest.mark.django_db(databases=["default"])
async def test_operator_pages_keep_djangos_handler_and_send_to_login(backend):
    from django.core.signals import request_started

    started = []

    def seen(sender, scope=None, **kwargs):
        started.append(scope["path"])

    request_started.connect(seen)
    try:
        response = await _asgi("GET", "/ops/")
        await _asgi("GET", "/healthz")
    finally:
        request_started.disconnect(seen)
    assert response["status"] == 302
    assert response["headers"]["location"].startswith("/admin/login/")
    assert response["headers"]["x-frame-options"] == "DENY"
    # Django's handler sends the request signals that manage the auth tables' database
    # connection; the API's paths, which use no database, skip them.
    assert started == ["/ops/"]


async def test_head_and_options_on_the_async_routes_answer_without_an_error(backend):
    import json

    from tests.conftest import KEY_HASH

    body = json.dumps({"namespace_id": "asgi-head", "key_hash": KEY_HASH}).encode()
    session = json.loads((await _asgi("POST", "/api/v1/sessions", body))["body"])
    path = f"/api/v1/sessions/{session['id']}"
    holder = [(b"authorization", f"Bearer {session['session_token']}".encode())]
    head = await _asgi("HEAD", path, headers=holder)
    assert head["status"] == 200  # (the server drops the body of a HEAD response)
    options = await _asgi("OPTIONS", path, headers=holder)
    assert options["status"] == 200
    assert set(options["headers"]["allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}


def test_metrics_can_be_closed_to_all_but_the_scrapers_addresses(api):
    from django.test import override_settings

    with override_settings(METRICS_ALLOWED_IPS=["10.1.0.0/16", "192.0.2.7"]):
        assert api.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 404
        assert api.get("/metrics", REMOTE_ADDR="10.1.4.2").status_code == 200
        assert api.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert api.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200, "open by default"


def test_the_api_docs_can_be_closed_to_the_public(api):
    from django.test import override_settings

    with override_settings(API_DOCS_PUBLIC=False):
        assert api.get("/api/docs/").status_code == 404
        assert api.get("/api/schema/").status_code == 404
    assert api.get("/api/docs/").status_code == 200
