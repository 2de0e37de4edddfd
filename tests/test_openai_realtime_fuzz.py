"""Hypothesis throws arbitrary events at ``/v1/realtime``: every one is handled (an answer or
an OpenAI-shaped error, never a handler's failure), and the socket stays open or closes with
a contract code."""

import asyncio
import json
import os

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import create_session, hold

pytestmark = pytest.mark.django_db(databases=[])

CONTRACT_CLOSE_CODES = {1000, 1011, 4400, 4401, 4404, 4408, 4409, 4413, 4429}
TYPES = [
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "response.create",
    "",
]
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Sessions shaped like OpenAI's, with arbitrary values where the fields are.
session_values = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["transcription", "realtime"]) | anything,
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": anything,
                        "transcription": anything,
                        "turn_detection": anything,
                        "noise_reduction": anything,
                    },
                )
                | anything
            },
        )
        | anything,
        "input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"]) | anything,
        "input_audio_transcription": anything,
        "turn_detection": anything,
        "include": anything,
    },
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | anything},
    optional={"session": session_values | anything, "audio": anything, "event_id": anything},
)
frames = st.one_of(events.map(json.dumps), st.text(max_size=100), st.binary(max_size=200))
PROBE = {"type": "transcription_session.update", "session": {}}


async def _exercise(session: dict, sequence: list) -> None:
    from voiceproject.asgi import application

    comm = WebsocketCommunicator(
        application,
        "/v1/realtime?model=fuzz",
        headers=[(b"authorization", f"Bearer {session['session_token']}".encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from(timeout=5)  # session.created
    for frame in sequence:
        key = "bytes" if isinstance(frame, bytes) else "text"
        await comm.send_input({"type": "websocket.receive", key: frame})
    await comm.send_json_to(PROBE)
    while True:
        try:
            out = await comm.receive_output(timeout=5)
        except TimeoutError:
            raise AssertionError("the consumer went silent: no answer and no close") from None
        if out["type"] == "websocket.close":
            assert out.get("code", 1000) in CONTRACT_CLOSE_CODES
            return
        event = json.loads(out["text"])
        assert isinstance(event["event_id"], str) and isinstance(event["type"], str)
        if event["type"] == "error":
            assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
            assert event["error"]["code"] != "message_failed", "a handler failed"
        if event["type"] == "transcription_session.updated":
            break
    await comm.disconnect()


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(frames, min_size=1, max_size=6))
def test_arbitrary_events_are_each_answered_and_never_fail_a_handler(api, sequence):
    session = hold(api, create_session(api, namespace_id="fuzz-openai"))
    try:
        asyncio.run(_exercise(session, sequence))
    finally:
        api.delete(f"/api/v1/sessions/{session['id']}")
