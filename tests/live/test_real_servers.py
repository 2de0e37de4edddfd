"""The service under real daphne and uvicorn processes: what only a real server shows.

Close codes and reasons as a client reads them, frame limits, the Origin handshake, and the
whole REST + socket flow over real sockets. Every test runs under both servers, on the
production defaults: the servers get only ``SECRET_KEY`` and ``ALLOWED_HOSTS`` (and a log
level), so DEBUG is off and the tick, heartbeats, throttles and limits are what a deployment
gets (``tests/live/servers.py:base_env`` passes nothing of the test settings through).
"""

import asyncio
import json

import pytest
import websockets

from tests.live.servers import production_env, serve, until

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    env = production_env(LOG_LEVEL="INFO", LOG_FORMAT="json")
    with serve(tmp, server=request.param, **env) as srv:
        yield srv


async def _close_code(ws) -> tuple[int, str]:
    """The close code, and the reason from the ``error`` event sent before it.

    (Daphne does not put close reasons on the wire, so the service says them in an event.
    Uvicorn does, and they must agree.)
    """
    reason = ""
    try:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event.get("type") == "error" and "close_code" in event:
                reason = event["message"]
    except websockets.ConnectionClosed as closed:
        if reason:
            assert event["close_code"] == closed.rcvd.code
            assert closed.rcvd.reason in ("", reason)
        return closed.rcvd.code, reason


async def _until(ws, event_type: str) -> list[dict]:
    return await until(ws, lambda event: event["type"] == event_type)


async def test_the_newcomer_flow_create_connect_talk_delete(server):
    session = server.create_session()
    async with websockets.connect(server.ws_url(session)) as ws:
        ready = json.loads(await ws.recv())
        assert ready["type"] == "session.ready"
        await ws.send(json.dumps({"type": "text", "text": "add bread to my list"}))
        events = await _until(ws, "response")
        assert events[-1]["text"] == "Added bread to your list."
        status, body = server.request(
            "GET", f"/api/v1/sessions/{session['id']}/tasks", token=session["session_token"]
        )
        assert status == 200 and body[0]["type"] == "todo"
        status, body = server.request(
            "DELETE", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
        )
        assert status == 200 and body == {"status": "closed", "session_id": session["id"]}
        assert (await _until(ws, "session.closed"))[-1]["reason"] == "deleted"
        assert (await _close_code(ws))[0] == 1000


async def test_a_client_reads_the_close_code_and_reason_of_a_refusal(server):
    session = server.create_session()
    url = server.ws_url(session)
    bad = url.split("&token=")[0] + "&token=forged"
    async with websockets.connect(bad) as ws:
        code, reason = await _close_code(ws)
    assert code == 4401 and "forged" in reason
    async with websockets.connect(url) as ws:
        await ws.recv()
    async with websockets.connect(url) as ws:  # the same token again
        assert (await _close_code(ws))[0] == 4401


async def test_a_frame_over_the_limit_is_closed_with_4413_by_the_real_server(server):
    async with websockets.connect(server.ws_url(server.create_session())) as ws:
        await ws.recv()
        await ws.send(b"\x00" * (65536 + 2))
        assert (await _close_code(ws))[0] == 4413


async def test_a_foreign_origin_is_refused_at_the_handshake_with_403(server):
    url = server.ws_url(server.create_session())
    for origin in ("http://evil.example", "null"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(url, origin=origin):
                pass
        assert info.value.response.status_code == 403


async def test_an_allowed_origin_connects(server):
    url = server.ws_url(server.create_session())
    async with websockets.connect(url, origin="http://127.0.0.1") as ws:
        assert json.loads(await ws.recv())["type"] == "session.ready"


async def test_reconnecting_with_a_fresh_url_takes_over_with_4409(server):
    session = server.create_session()
    first = await websockets.connect(server.ws_url(session))
    await first.recv()
    _, fresh = server.request(
        "GET", f"/api/v1/sessions/{session['id']}", token=session["session_token"]
    )
    async with websockets.connect(server.ws_url(fresh)) as second:
        await second.recv()
        assert (await _close_code(first))[0] == 4409
        await second.send(json.dumps({"type": "ping"}))
        assert json.loads(await second.recv())["type"] == "pong"


def test_errors_are_json_and_never_500(server):
    for method, path, body in [
        ("POST", "/api/v1/sessions", {"namespace_id": "x y", "key_hash": 1}),
        ("POST", "/api/v1/sessions", ["not", "an", "object"]),
        ("GET", "/api/v1/sessions/../../etc/passwd", None),
        ("GET", "/api/v1/tasks/" + "9" * 500, None),
        ("POST", "/api/v1/tasks/nope/confirm", None),
        ("PUT", "/api/v1/sessions", {}),
    ]:
        status, _ = server.request(method, path, body)
        assert 400 <= status < 500, (method, path, status)
    status, body = server.request("GET", "/nowhere")
    assert status == 404 and body == {"detail": "Not found"}


async def test_the_server_log_names_sessions_by_8_characters_and_never_a_token(server):
    session = server.create_session("log-check-namespace")
    url = server.ws_url(session)
    token = url.split("token=")[1].split("&")[0]
    async with websockets.connect(url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "text", "text": "remind me to call the dentist"}))
        await _until(ws, "response")
    server.request("GET", f"/api/v1/sessions/{session['id']}", token=session["session_token"])
    server.request("DELETE", f"/api/v1/sessions/{session['id']}", token=session["session_token"])
    await asyncio.sleep(0.5)
    log = server.log.read_text()
    assert session["id"][:8] in log  # the service did log this session, by its short id
    for secret in (session["id"], token, "log-check-namespace", "dentist"):
        assert secret not in log, secret
    for line in filter(None, log.splitlines()):
        json.loads(line)  # every line, the server's own included, is a JSON event


def test_only_the_sessions_holder_may_touch_it_on_a_real_server(server):
    """CONTRACT 1b under daphne and uvicorn, on the production defaults."""
    session = server.create_session("holder-check")
    other = server.create_session("someone-else")
    path = f"/api/v1/sessions/{session['id']}"
    mine = session["session_token"]
    forged = mine[:-1] + ("A" if mine[-1] != "A" else "B")
    for token in (None, other["session_token"], forged):
        status, body = server.request("GET", path, token=token)
        assert (status, body) == (401, {"detail": "Invalid session token"}), token
        status, _ = server.request("DELETE", path, token=token)
        assert status == 401, token
    status, body = server.request("GET", path, token=session["session_token"])
    assert status == 200 and body["id"] == session["id"] and "session_token" not in body
    status, _ = server.request("DELETE", path, token=session["session_token"])
    assert status == 200
    status, body = server.request("GET", path, token=session["session_token"])
    assert (status, body) == (404, {"detail": "Session not found"})
