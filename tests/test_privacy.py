"""Nothing a user says reaches a log or a Redis dump in plain text."""

import pytest

from tests.conftest import KEY_HASH, adelete, aget, connect, hold, receive_until, redis_dump

pytestmark = pytest.mark.django_db(databases=[])

NAMESPACE = "tenant-0123456789abcdef"
SECRET_TEXT = "remind me to pay Schmidt-Kowalski 4711 euros tomorrow"


async def test_logs_name_ids_by_8_characters_and_carry_no_user_data(backend, api, captured_logs):
    from asgiref.sync import sync_to_async

    response = await sync_to_async(api.post, thread_sensitive=False)(
        "/api/v1/sessions", {"namespace_id": NAMESPACE, "key_hash": KEY_HASH}, format="json"
    )
    session = hold(api, response.json())
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": SECRET_TEXT})
    events = await receive_until(comm, "response")
    task_id = next(e for e in events if e["type"] == "task.created")["task"]["id"]
    await comm.send_json_to({"type": "text", "text": "confirm"})
    await receive_until(comm, "response")
    await aget(api, f"/api/v1/sessions/{session['id']}/stats")
    await aget(api, f"/api/v1/sessions/{session['id']}/nope")  # a 404 from Django itself
    await adelete(api, f"/api/v1/sessions/{session['id']}")
    await receive_until(comm, "session.closed")
    await comm.disconnect()

    logs = captured_logs.getvalue()
    assert session["id"][:8] in logs, "the test must have captured the service's own logs"
    for secret in (
        session["id"],
        task_id,
        NAMESPACE,
        KEY_HASH,
        KEY_HASH[7:],
        "Schmidt",
        "4711",
        "pay Schmidt",
        session["websocket_url"].split("token=")[1][:20],
        session["session_token"],
        session["session_token"][:20],
    ):
        assert secret not in logs, secret


def test_the_redaction_filter_cuts_ids_and_drops_secret_fields():
    from core.logging import redact

    out = redact(
        None,
        "info",
        {
            "event": "GET /api/v1/sessions/1f0e3a6c-3b9a-4c61-9b53-5a2a2f1f0b77/stats?token=abc",
            "session_id": "1f0e3a6c-3b9a-4c61-9b53-5a2a2f1f0b77",
            "namespace_id": NAMESPACE,
            "key_hash": KEY_HASH,
            "text": SECRET_TEXT,
        },
    )
    assert out["session_id"] == "1f0e3a6c"
    assert "3b9a" not in out["event"] and "abc" not in out["event"]
    assert out["namespace_id"] == out["key_hash"] == out["text"] == "[redacted]"


async def test_a_redis_dump_shows_no_plaintext_of_what_users_said(redis_backend, api):
    from asgiref.sync import sync_to_async

    response = await sync_to_async(api.post, thread_sensitive=False)(
        "/api/v1/sessions", {"namespace_id": NAMESPACE, "key_hash": KEY_HASH}, format="json"
    )
    session = response.json()
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "text", "text": "take a note Schmidt-Kowalski owes 4711"})
    await receive_until(comm, "response")
    await comm.send_json_to({"type": "text", "text": "what is on my list"})
    await receive_until(comm, "response")
    import asyncio

    await asyncio.sleep(0.3)  # the note's handler stores its (sealed) result

    dump = b" ".join(k + b" " + v for k, v in redis_dump(redis_backend).items())
    assert b"v1:" in dump, "sealed values must be in the dump"
    from core.crypto import unseal
    from sessions_app.store import messages_read

    history = [unseal(session["id"], m) for m in messages_read(session_id=session["id"])]
    assert "Schmidt-Kowalski owes 4711" in history[0], "the history opens with the session key"
    secrets = (session["session_token"], KEY_HASH, KEY_HASH[7:])  # CONTRACT 1b: never stored
    for plain in (b"Schmidt", b"4711", b"owes", NAMESPACE.encode(), *map(str.encode, secrets)):
        assert plain not in dump, plain
    await comm.disconnect()


def test_secrets_in_nested_fields_odd_names_and_bare_text_are_redacted():
    """The filter catches what no call site logs today, in case one ever does."""
    import uuid

    from core.access import session_token_issue
    from core.logging import redact

    sid = str(uuid.uuid4())
    token = session_token_issue(session_id=sid)
    out = redact(
        None,
        "info",
        {
            "event": f"made {token} for {sid}",
            "session_ids": [sid, sid],
            "token_value": token,
            "api_secret": "hunter2",
            "nested": {"k": KEY_HASH},
        },
    )
    text = str(out)
    for secret in (token, sid, KEY_HASH[7:], "hunter2"):
        assert secret not in text, secret
    assert sid[:8] in out["event"], "ids stay readable by their first 8 characters"
