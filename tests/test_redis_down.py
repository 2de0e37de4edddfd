"""With Redis unreachable, REST answers 503 with a clear detail, fast, and never a 500."""

import time

import pytest

from core.access import bound_id_issue, session_token_issue
from tests.conftest import KEY_HASH

pytestmark = pytest.mark.django_db(databases=[])

SID = "6f1c3b7e-2a8e-4f61-9b53-5a2a2f1f0b77"
TID = "2b1e9a44-77c1-4d0e-8f3a-0c5d9e6b1a22"  # replaced by one bound to SID in the test


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/sessions", {"namespace_id": "u", "key_hash": KEY_HASH}),
        ("get", f"/api/v1/sessions/{SID}", None),
        ("delete", f"/api/v1/sessions/{SID}", None),
        ("get", f"/api/v1/sessions/{SID}/stats", None),
        ("get", f"/api/v1/tasks/{TID}", None),
        ("post", f"/api/v1/tasks/{TID}/cancel", None),
    ],
)
def test_rest_answers_503_within_a_bounded_time_when_redis_is_down(
    dead_redis, api, method, path, body
):
    # The holder's credentials, made as the create would have made them (Redis is down).
    path = path.replace(TID, bound_id_issue(owner_id=SID))
    holder = {"HTTP_AUTHORIZATION": f"Bearer {session_token_issue(session_id=SID)}"}
    started = time.monotonic()
    response = getattr(api, method)(path, body, format="json", **holder)
    assert response.status_code == 503
    assert response.json() == {"detail": "Session state is unavailable, try again shortly"}
    assert time.monotonic() - started < 10  # bounded by the socket timeouts, not a hang


async def test_a_socket_is_closed_with_1011_when_redis_is_down(dead_redis):
    from channels.testing import WebsocketCommunicator

    from sessions_app.tokens import token_issue
    from voiceproject.asgi import application

    sid = "6f1c3b7e-2a8e-4f61-9b53-5a2a2f1f0b77"
    comm = WebsocketCommunicator(
        application, f"/ws/voice?session_id={sid}&token={token_issue(session_id=sid)}"
    )
    connected, _ = await comm.connect(timeout=10)
    assert connected
    said = await comm.receive_json_from(timeout=10)
    assert (said["type"], said["close_code"]) == ("error", 1011)
    out = await comm.receive_output(timeout=10)
    assert (out["type"], out["code"]) == ("websocket.close", 1011)
    await comm.wait(timeout=10)
