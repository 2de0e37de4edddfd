"""A corpus of hostile frames against one worker, then a newcomer must still be served.

Every frame is sent on a live socket, followed by a ping. The consumer must answer each with
well-formed events (an ``error`` at most) and a pong, or close with a code of the contract
that the frame deserves (4400, 4413, 4429): never 1011, never a dropped connection, never a
traceback. Afterwards the recognizer pool, the ``voice_sockets_open`` gauge and the session's
status are back where they were, and a fresh session on the same worker gets its transcript.
"""

import base64
import json
import random

import pytest
from django.test import override_settings

from core import metrics
from sessions_app.audio import pipeline
from tests.conftest import aget, connect, create_session, hold
from tests.test_speech import FAST, final_for, load, stream

pytestmark = pytest.mark.django_db(databases=[])

DEPTH = 30_000
WRONG = [None, True, False, 0, -1, 1.5, 10**30, "", "x", "\u0000", [], {}, [1], {"a": 1}]
FIELDS = {  # every message type and every field it reads
    "session.update": ["audio", "turn_detection"],
    "audio": ["data"],
    "audio.commit": [],
    "text": ["text"],
    "ping": [],
    "session.resume": ["last_seq"],
}


def _corpus() -> list[tuple[str, str | bytes]]:
    rng = random.Random(10)
    frames: list[tuple[str, str | bytes]] = [
        # nesting past the parser's recursion limit, bare and inside a message
        ("nested arrays", "[" * DEPTH + "]" * DEPTH),
        ("nested objects", '{"a":' * (DEPTH // 3) + "1" + "}" * (DEPTH // 3)),  # 60 KB
        ("nested in a field", '{"type": "ping", "x": ' + "[" * DEPTH + "]" * DEPTH + "}"),
        ("nested text", '{"type": "text", "text": ' + "[" * DEPTH + "]" * DEPTH + "}"),
        # JSON's edges: non-standard constants, huge numbers, duplicate keys
        ("NaN", "NaN"),
        ("Infinity", '{"type": "session.resume", "last_seq": Infinity}'),
        ("-Infinity", '{"type": "session.resume", "last_seq": -Infinity}'),
        ("NaN rate", '{"type": "session.update", "audio": {"sample_rate": NaN}}'),
        ("1e999", '{"type": "session.resume", "last_seq": 1e999}'),
        ("2**53", json.dumps({"type": "session.resume", "last_seq": 2**53})),
        ("4000 digits", '{"type": "session.resume", "last_seq": ' + "9" * 4000 + "}"),
        ("5000 digits", '{"type": "session.resume", "last_seq": ' + "9" * 5000 + "}"),
        ("duplicate keys", '{"type": "ping", "type": "text"}'),
        # time phrases with absurd numbers
        *[
            (f"time phrase {i}", json.dumps({"type": "text", "text": text}))
            for i, text in enumerate(
                [
                    "remind me to pay rent in 99999999999 hours",
                    "remind me to pay rent in " + "9" * 400 + " hours",
                    "remind me to pay rent in " + "9" * 1970 + " seconds",
                    "remind me to pay rent in ² hours",
                    "remind me to pay rent in ٣ minutes",
                    "remind me to pay rent at 99:99",
                    "remind me to pay rent tomorrow at 25",
                    "remind me to pay rent in -5 minutes",
                    "remind me to pay rent in 0 seconds",
                    "remind me to " + "in 5 minutes " * 150,
                    "remind me to",
                    "add  to my list",
                ]
            )
        ],
        # unicode oddities
        ("lone surrogate", '{"type": "text", "text": "add \\ud800 to my list"}'),
        ("BOM", "\ufeff" + json.dumps({"type": "ping"})),
        ("NUL in type", json.dumps({"type": "ping\u0000"})),
        ("RTL override", json.dumps({"type": "text", "text": "take a note \u202egnp.exe"})),
        ("zero width", json.dumps({"type": "text", "text": "\u200b\u200b\u200b"})),
        ("combining", json.dumps({"type": "text", "text": "a" + "\u0301" * 1999})),
        ("astral 2000", json.dumps({"type": "text", "text": "\U0001d538" * 2000})),
        ("2001 chars", json.dumps({"type": "text", "text": "a" * 2001})),
        ("whitespace text", json.dumps({"type": "text", "text": " \t\n "})),
        ("PING", json.dumps({"type": "PING"})),
        # empty and bare frames
        ("empty text", ""),
        ("empty bytes", b""),
        *[(f"bare {raw}", raw) for raw in ("{}", "[]", "null", "0", '""', " ", "\n", "true")],
        # binary garbage
        ("one byte", b"\x00"),
        ("odd bytes", bytes(rng.getrandbits(8) for _ in range(641))),
        ("noise 2000", bytes(rng.getrandbits(8) for _ in range(2000))),
        ("64 KiB", bytes(rng.getrandbits(8) for _ in range(65536))),
        ("over 64 KiB", b"\xff" * 65537),
        ("binary JSON", json.dumps({"type": "session.close"}).encode()),
        # base64 garbage
        *[
            (f"base64 {i}", json.dumps({"type": "audio", "data": data}))
            for i, data in enumerate(
                ["====", "YQ", "YWJj", " QUJD ", "-_-_", "data:audio/wav;base64,AAAA", "A" * 60000]
            )
        ],
        (
            "base64 of 64 KiB+",
            json.dumps({"type": "audio", "data": base64.b64encode(b"\0" * 49000).decode()}),
        ),
        # a too-large text frame
        ("over 64 KiB text", json.dumps({"type": "text", "text": "a" * 70000})),
    ]
    # wrong types in every field of every message type, and as the type itself
    for value in WRONG:
        frames.append((f"type={value!r}", json.dumps({"type": value})))
        for kind, fields in FIELDS.items():
            for name in fields:
                frames.append((f"{kind}.{name}={value!r}", json.dumps({"type": kind, name: value})))
        for name in ("encoding", "sample_rate"):
            message = {"type": "session.update", "audio": {name: value}}
            frames.append((f"session.update.audio.{name}={value!r}", json.dumps(message)))
        for name in ("silence_duration_ms", "prefix_padding_ms", "threshold"):
            message = {
                "type": "session.update",
                "turn_detection": {"type": "server_vad", name: value},
            }
            frames.append((f"session.update.turn_detection.{name}={value!r}", json.dumps(message)))
    return frames


CORPUS = _corpus()
ALLOWED_CLOSES = {4400, 4413, 4429}  # what a frame may deserve; never 1011 or 1006


async def _ping_through(comm) -> tuple[list[dict], int | None]:
    """Events up to the pong of a ping sent now, or up to the server's close (its code)."""
    await comm.send_json_to({"type": "ping"})
    said = []
    while True:
        out = await comm.receive_output(timeout=10)
        if out["type"] == "websocket.close":
            return said, out.get("code", 1000)
        text = out["text"]
        assert "Traceback" not in text
        event = json.loads(text)
        assert isinstance(event.get("type"), str) and isinstance(event.get("seq"), int), event
        said.append(event)
        if event["type"] == "pong":
            return said, None


@FAST
@override_settings(SOCKET_MESSAGE_RATE=0)  # the rate has its own tests; here every frame lands
async def test_a_corpus_of_hostile_frames_leaves_the_worker_serving_a_newcomer(backend, api):
    pool = pipeline.get_pool()
    busy_before = pool.busy
    sockets_before = metrics.SOCKETS_OPEN._value.get()
    session = hold(api, create_session(api, namespace_id="hostile"))
    url = f"/api/v1/sessions/{session['id']}"
    comm, _ = await connect(session)
    closes: dict[str, int] = {}
    failures: list[tuple[str, str]] = []
    for name, frame in CORPUS:
        key = "bytes" if isinstance(frame, bytes) else "text"
        await comm.send_input({"type": "websocket.receive", key: frame})
        said, code = await _ping_through(comm)
        failures += [
            (name, e["code"])
            for e in said
            if e["type"] == "error" and e["code"] in ("message_failed", "utterance_failed")
        ]
        if code is not None:
            closes[name] = code
            assert code in ALLOWED_CLOSES, (name, code, said[-1:])
            assert said and said[-1].get("close_code") == code, (name, said[-1:])
            await comm.wait()
            comm, _ = await connect((await aget(api, url)).json())
            assert (await aget(api, url)).json()["status"] == "connected"
    assert failures == [], "a handler raised instead of answering"
    assert closes.get("over 64 KiB") == 4413 and closes.get("over 64 KiB text") == 4413
    await comm.disconnect()

    assert metrics.SOCKETS_OPEN._value.get() == sockets_before
    assert (await aget(api, url)).json()["status"] == "created", "back to waiting for a socket"
    assert pool.busy == busy_before

    newcomer, _ = await connect(create_session(api, namespace_id="newcomer"))
    await stream(newcomer, load("add_milk_to_my_list"))
    assert (await final_for(newcomer))[-1]["text"] == "add milk to my list"
    await newcomer.disconnect()
    assert pool.busy == busy_before
    assert metrics.SOCKETS_OPEN._value.get() == sockets_before


def test_the_corpus_covers_every_message_type_and_field():
    names = {name for name, _ in CORPUS}
    for kind, fields in FIELDS.items():
        for name in fields:
            assert f"{kind}.{name}=None" in names
    assert len(CORPUS) > 150
