"""Hypothesis throws arbitrary frames at the socket: never a crash, never a traceback."""

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import create_session, hold, ws_path

pytestmark = pytest.mark.django_db(databases=[])

CONTRACT_CLOSE_CODES = {1000, 1011, 4400, 4401, 4404, 4408, 4409, 4413, 4429}
TYPES = ["session.update", "audio", "audio.commit", "text", "ping", "session.resume", "x", ""]
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | anything},
    optional={"text": anything, "data": anything, "last_seq": anything, "audio": anything},
)
frames = st.one_of(
    st.binary(max_size=2000),
    st.binary(min_size=65_000, max_size=66_000),
    st.text(max_size=300),
    messages.map(json.dumps),
    st.builds(lambda n: "a" * n, st.integers(65_000, 70_000)),
)


async def _exercise(session: dict, sequence: list) -> None:
    from voiceproject.asgi import application

    comm = WebsocketCommunicator(application, ws_path(session))
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from(timeout=5)  # session.ready
    closed = False
    for frame in sequence:  # send_input: the communicator's send_to refuses empty frames
        key = "bytes" if isinstance(frame, bytes) else "text"
        await comm.send_input({"type": "websocket.receive", key: frame})
    await comm.send_json_to({"type": "ping"})
    while True:
        try:
            out = await comm.receive_output(timeout=5)
        except TimeoutError:
            raise AssertionError("the consumer went silent: no pong and no close") from None
        if out["type"] == "websocket.close":
            assert out.get("code", 1000) in CONTRACT_CLOSE_CODES
            closed = True
            break
        text = out.get("text", "")
        assert "Traceback" not in text
        event = json.loads(text)
        assert isinstance(event.get("type"), str) and isinstance(event.get("seq"), int)
        if event["type"] == "pong":
            break
    if not closed:
        await comm.disconnect()


@settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(frames, min_size=1, max_size=6))
def test_arbitrary_frames_never_crash_the_consumer_or_leak_a_traceback(api, sequence):
    session = hold(api, create_session(api, namespace_id="fuzz"))
    try:
        asyncio.run(_exercise(session, sequence))
    finally:
        api.delete(f"/api/v1/sessions/{session['id']}")
