"""A phone call over Twilio Media Streams (CONTRACT 2c), played by a simulated Twilio.

The simulated Twilio signs its webhook requests with the ``twilio`` package's own
``RequestValidator`` (9.13.0), and speaks the messages of Twilio's "Media Streams -
WebSocket Messages" page field for field: ``connected``, ``start`` (``streamSid``,
``accountSid``, ``callSid``, ``tracks``, ``customParameters``, ``mediaFormat``), ``media``
(``track``, ``chunk``, ``timestamp``, base64 ``payload``), ``dtmf``, ``mark``, ``stop``,
each with its ``sequenceNumber``. Speech is a fixture WAV, resampled to 8 kHz and mu-law
encoded here by the G.711 formula (not the service's table).
"""

import asyncio
import base64
import wave
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
import soxr
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient, override_settings
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from sessions_app import selectors, telephony
from sessions_app.audio import synthesis
from sessions_app.audio.formats import MULAW_TO_PCM
from tasks_app import selectors as task_selectors
from tests.conftest import KEY_HASH, close_code
from tests.test_settings_guard import _start as start_service

pytestmark = pytest.mark.django_db(databases=[])

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
WEBHOOK = "/api/v1/telephony/twilio/voice"
AUDIO = Path(__file__).parent / "fixtures" / "audio"
ACCOUNT_SID = "AC" + "a" * 32
CALL_SID = "CA" + "b" * 32
STREAM_SID = "MZ" + "c" * 32
LINE = override_settings(
    TWILIO_AUTH_TOKEN=AUTH_TOKEN,
    TWILIO_NAMESPACES={"+15550001111": "support", "*": "calls"},
    AUDIO_RATE_LIMIT_FACTOR=1000,
)


def _proxies(n: int):
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": n})


# the simulated Twilio ------------------------------------------------------------------------
def call_form(to: str = "+15550001111") -> dict:
    """The form fields Twilio posts for an incoming call (a subset of its documented ones)."""
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": "+15557654321",
        "Direction": "inbound",
        "From": "+15557654321",
        "To": to,
    }


async def webhook(form: dict, *, url: str = "http://testserver" + WEBHOOK, signature=None, **kw):
    """POST the call as Twilio does: urlencoded, signed over ``url`` (the URL it called)."""
    if signature is None:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    headers.update(kw.pop("headers", {}))
    path = urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else "")
    return await AsyncClient().post(
        path,
        urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
        **kw,
    )


def stream_of(twiml: bytes) -> tuple[str, dict]:
    """The ``<Stream>`` URL and its ``<Parameter>``s of a ``<Connect><Stream>`` answer."""
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url"), params


def mulaw(pcm: np.ndarray) -> bytes:
    """G.711 mu-law by its formula: bias 132, clip 32635, segment and mantissa, inverted."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 132
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def phone_audio(name: str) -> bytes:
    """A fixture WAV as a phone sends it: 8 kHz mu-law."""
    with wave.open(str(AUDIO / f"{name}.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    return mulaw(soxr.resample(pcm, rate, 8000).astype(np.int16))


class SimulatedTwilio:
    """Twilio's side of a media stream: each message numbered as Twilio numbers them."""

    def __init__(self, comm: WebsocketCommunicator):
        self.comm = comm
        self.sequence = 0
        self.chunk = 0

    async def send(self, event: str, **fields) -> None:
        self.sequence += 1
        message = {"event": event, "sequenceNumber": str(self.sequence), **fields}
        if event != "connected":
            message.setdefault("streamSid", STREAM_SID)
        await self.comm.send_json_to(message)

    async def connected(self) -> None:
        await self.comm.send_json_to({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    async def start(self, parameters: dict, media_format: dict | None = None) -> None:
        await self.send(
            "start",
            start={
                "accountSid": ACCOUNT_SID,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "mediaFormat": media_format
                or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
        )

    async def speak(self, audio: bytes) -> None:
        """20 ms a message, as Twilio sends the caller's audio."""
        for offset in range(0, len(audio), 160):
            self.chunk += 1
            await self.send(
                "media",
                media={
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str((self.chunk - 1) * 20),
                    "payload": base64.b64encode(audio[offset : offset + 160]).decode(),
                },
            )
            if self.chunk % 25 == 0:
                await asyncio.sleep(0)

    async def silence(self, seconds: float) -> None:
        await self.speak(b"\xff" * int(8000 * seconds))

    async def stop(self) -> None:
        await self.send("stop", stop={"accountSid": ACCOUNT_SID, "callSid": CALL_SID})


async def answer_call(to: str = "+15550001111") -> tuple[str, dict]:
    response = await webhook(call_form(to))
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/xml")
    assert response["Cache-Control"] == "no-store", "it carries a token: no cache may keep it"
    return stream_of(response.content)


async def open_stream(url: str) -> tuple[WebsocketCommunicator, SimulatedTwilio]:
    from voiceproject.asgi import application

    comm = WebsocketCommunicator(application, urlsplit(url).path)
    connected, _ = await comm.connect()
    assert connected
    return comm, SimulatedTwilio(comm)


def live_call_session() -> dict:
    total, rows = selectors.session_list()
    assert total == 1, rows
    return rows[0]


async def attached(timeout: float = 30) -> dict:
    """The call's session once a stream has attached to it (its status is no longer
    ``created``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        session = live_call_session()
        if session["status"] != "created":
            return session
        await asyncio.sleep(0.02)
    raise AssertionError("no stream attached to the call's session")


async def buffered_until(session_id: str, event_type: str, timeout: float = 90) -> list[dict]:
    """The session's events (its replay buffer, as any other socket would hear them) up to
    the first of ``event_type``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        events, _ = await selectors.asession_replay(session_id=session_id, after_seq=0)
        for i, event in enumerate(events):
            if event["type"] == event_type:
                return events[: i + 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event_type} in {[e['type'] for e in events]}")


# the signature -------------------------------------------------------------------------------
@given(
    url=st.sampled_from(
        [
            "https://voice.example.com/api/v1/telephony/twilio/voice",
            "https://voice.example.com:443/api/v1/telephony/twilio/voice?line=a%20b",
            "http://127.0.0.1:8000/api/v1/telephony/twilio/voice",
        ]
    ),
    form=st.dictionaries(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabc", min_size=1, max_size=12),
        st.text(max_size=30),
        max_size=8,
    ),
)
def test_the_signature_is_twilios_own_for_any_form(url, form):
    reference = RequestValidator(AUTH_TOKEN)
    ours = telephony.signature(secret=AUTH_TOKEN, url=url, params=form)
    assert ours == reference.compute_signature(url, form)
    assert telephony.signature_valid(secret=AUTH_TOKEN, url=url, params=form, signed=ours)
    assert reference.validate(url, form, ours)
    assert not telephony.signature_valid(
        secret="another" + AUTH_TOKEN, url=url, params=form, signed=ours
    )


def test_a_signature_over_the_url_with_or_without_its_default_port_is_accepted():
    form = call_form()
    for signed_url, checked_url in [
        ("https://voice.example.com:443/hook", "https://voice.example.com/hook"),
        ("https://voice.example.com/hook", "https://voice.example.com:443/hook"),
    ]:
        signed = RequestValidator(AUTH_TOKEN).compute_signature(signed_url, form)
        assert telephony.signature_valid(
            secret=AUTH_TOKEN, url=checked_url, params=form, signed=signed
        )


def test_an_hmac_sha256_signature_is_checked_when_the_request_names_that_algorithm():
    form = call_form()
    url = "https://voice.example.com/hook"
    signed = RequestValidator(AUTH_TOKEN).compute_signature(url, form, "HMAC_SHA256")
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert telephony.signature_valid(
        secret=AUTH_TOKEN, url=url, params=form, signed=signed, settings_header=header
    )
    assert not telephony.signature_valid(secret=AUTH_TOKEN, url=url, params=form, signed=signed)


# the settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TWILIO_NAMESPACES": "+15550001111"}, "TWILIO_NAMESPACES entries are NUMBER=NAMESPACE"),
        ({"TWILIO_NAMESPACES": "+1555=sup port"}, "TWILIO_NAMESPACES entries are NUMBER=NAMESPACE"),
        ({"TWILIO_TIMEZONE": "Mars/Olympus"}, "TWILIO_TIMEZONE must be an IANA name"),
    ],
)
def test_a_misconfigured_line_stops_the_service_at_start_with_one_line(env, says):
    result = start_service(SECRET_KEY="k" * 40, **env)
    assert result.returncode == 1
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_line_settings_parse_numbers_to_namespaces():
    from voiceproject.settings import _twilio_namespaces

    lines = _twilio_namespaces(" +1 555 000 1111 = support, +15550002222=sales ,*=calls")
    assert lines == {"+15550001111": "support", "+15550002222": "sales", "*": "calls"}
    assert _twilio_namespaces("") == {"*": "twilio"}
    with override_settings(TWILIO_NAMESPACES=lines):
        assert telephony.line_namespace("+1 555 000 1111") == "support"
        assert telephony.line_namespace("+15559999999") == "calls"
        assert telephony.line_namespace(None) == "calls"


# the webhook ---------------------------------------------------------------------------------
@LINE
async def test_a_signed_call_gets_a_stream_to_ws_twilio_with_the_token_as_a_parameter():
    url, params = await answer_call()
    assert url == "ws://testserver/ws/twilio"
    assert urlsplit(url).query == "", "Twilio drops query strings: the token is a Parameter"
    assert set(params) == {"token"} and len(params["token"]) > 20
    session = live_call_session()
    assert session["namespace_id"] == "support"
    assert session["device_type"] == "twilio"
    assert session["status"] == "created"


@LINE
async def test_a_number_not_listed_goes_to_the_default_namespace():
    await answer_call(to="+15559990000")
    assert live_call_session()["namespace_id"] == "calls"


@LINE
async def test_a_bad_signature_is_refused_with_403_and_makes_no_session():
    response = await webhook(call_form(), signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid Twilio signature"}
    assert selectors.session_list()[0] == 0


@LINE
async def test_a_missing_signature_is_refused_with_403():
    response = await webhook(call_form(), signature="")
    assert response.status_code == 403


@LINE
async def test_a_signature_of_other_fields_is_refused_with_403():
    signed = RequestValidator(AUTH_TOKEN).compute_signature(
        "http://testserver" + WEBHOOK, call_form()
    )
    response = await webhook(call_form(to="+15559990000"), signature=signed)
    assert response.status_code == 403


@LINE
async def test_a_signature_by_another_auth_token_is_refused_with_403():
    signed = RequestValidator("f" * 32).compute_signature(
        "http://testserver" + WEBHOOK, call_form()
    )
    response = await webhook(call_form(), signature=signed)
    assert response.status_code == 403


@override_settings(TWILIO_AUTH_TOKEN="")
async def test_without_an_auth_token_the_webhook_refuses_every_call_with_503():
    response = await webhook(call_form())
    assert response.status_code == 503
    assert response.json() == {"detail": "Twilio is not configured"}
    assert selectors.session_list()[0] == 0


@LINE
async def test_a_body_over_64_kib_is_a_413_and_other_bodies_are_not_parsed():
    big = await webhook({**call_form(), "Padding": "x" * 70_000})
    assert big.status_code == 413
    url = "http://testserver" + WEBHOOK
    multipart = await AsyncClient().post(
        WEBHOOK,
        call_form(),  # Django's test client sends multipart/form-data
        headers={"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, {})},
    )
    assert multipart.status_code == 200, "signed as no fields: the multipart body was not read"
    assert live_call_session()["namespace_id"] == "calls"


@LINE
async def test_the_webhook_takes_only_post():
    response = await AsyncClient().get(WEBHOOK)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@LINE
async def test_behind_a_trusted_proxy_the_forwarded_url_is_checked_and_the_stream_is_wss():
    public = "https://voice.example.com" + WEBHOOK
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
    with _proxies(1), override_settings(ALLOWED_HOSTS=["testserver", "voice.example.com"]):
        response = await webhook(call_form(), url=public, headers=forwarded)
        assert response.status_code == 200, response.content
        url, _ = stream_of(response.content)
        assert url == "wss://voice.example.com/ws/twilio"


@LINE
async def test_without_trusted_proxies_forwarded_headers_do_not_choose_the_checked_url():
    public = "https://voice.example.com" + WEBHOOK
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
    with override_settings(ALLOWED_HOSTS=["testserver", "voice.example.com"]):
        response = await webhook(call_form(), url=public, headers=forwarded)
    assert response.status_code == 403


@LINE
async def test_a_forwarded_host_outside_allowed_hosts_is_a_400():
    public = "https://evil.example.net" + WEBHOOK
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.net"}
    with _proxies(1):
        response = await webhook(call_form(), url=public, headers=forwarded)
    assert response.status_code == 400


@LINE
async def test_a_full_line_answers_busy_and_makes_no_session():
    with override_settings(MAX_SESSIONS_PER_USER=1):
        await answer_call()
        response = await webhook(call_form())
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    assert root.find("./Reject").get("reason") == "busy"
    assert root.find("./Connect") is None
    assert selectors.session_list()[0] == 1


@LINE
async def test_rest_clients_cannot_create_sessions_in_a_line_with_a_live_call(api):
    await answer_call()
    response = api.post(
        "/api/v1/sessions", {"namespace_id": "support", "key_hash": KEY_HASH}, format="json"
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid encryption key hash"}


@LINE
async def test_the_webhook_logs_no_phone_number(captured_logs):
    await answer_call()
    await webhook(call_form(), signature="bm90IGEgc2lnbmF0dXJl")
    logs = captured_logs.getvalue()
    assert "twilio_call_session" in logs
    for secret in ("5550001111", "5557654321", "support", CALL_SID):
        assert secret not in logs


# the stream ----------------------------------------------------------------------------------
@LINE
async def test_a_spoken_command_on_a_call_creates_its_task(backend):
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.connected()
    await twilio.start(params)
    await twilio.silence(0.3)
    await twilio.speak(phone_audio("remind_buy_milk_tomorrow"))
    await twilio.silence(1.0)
    session = live_call_session()
    events = await buffered_until(session["id"], "response")
    final = next(e for e in events if e["type"] == "transcript.final")
    assert final["text"] == "remind me to buy milk tomorrow"
    created = next(e for e in events if e["type"] == "task.created")["task"]
    assert (created["type"], created["state"]) == ("reminder", "draft")
    assert events[-1]["text"].startswith("Reminder to buy milk")
    await twilio.stop()
    assert await close_code(comm) == 1000
    assert selectors.session_list()[0] == 0, "the call's end frees its slot in the line"
    kept = await task_selectors.atask_get(task_id=created["id"])
    assert kept is not None and kept["type"] == "reminder"


async def twilio_messages_until(comm, event: str, timeout: float = 90) -> list[dict]:
    """What the service sends Twilio, up to and including the first ``event`` message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = []
    while True:
        message = await comm.receive_json_from(timeout=max(0.01, deadline - loop.time()))
        seen.append(message)
        if message.get("event") == event:
            return seen


async def call_with_a_reply() -> tuple[WebsocketCommunicator, SimulatedTwilio, dict]:
    """A call whose caller asked for a reminder; returns once the reply's audio is flowing."""
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.connected()
    await twilio.start(params)
    await twilio.silence(0.3)
    await twilio.speak(phone_audio("remind_buy_milk_tomorrow"))
    await twilio.silence(1.0)
    return comm, twilio, live_call_session()


def spoken(audio: bytes) -> bool:
    """Whether mu-law audio is more than silence (codes near 0xFF and 0x7F are near zero)."""
    pcm = MULAW_TO_PCM[np.frombuffer(audio, dtype=np.uint8)].astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2))) > 300


@LINE
async def test_the_spoken_reply_comes_back_as_media_of_the_stream_then_a_mark(backend):
    assert synthesis.voices(), "the test needs the voice of requirements-voice.txt"
    comm, twilio, session = await call_with_a_reply()
    messages = await twilio_messages_until(comm, "mark")
    media, mark = messages[:-1], messages[-1]
    assert media and all(m["event"] == "media" for m in media), messages[:3]
    assert all(m["streamSid"] == STREAM_SID for m in messages)
    assert all(set(m) == {"event", "streamSid", "media"} for m in media)
    assert all(set(m["media"]) == {"payload"} for m in media)
    audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert all(len(base64.b64decode(m["media"]["payload"])) <= 160 for m in media)
    assert spoken(audio)
    events, _ = await selectors.asession_replay(session_id=session["id"], after_seq=0)
    reply = next(e for e in events if e["type"] == "response")
    done = next(e for e in events if e["type"] == "response.audio.done")
    assert reply["text"].startswith("Reminder to buy milk")
    assert mark["mark"] == {"name": done["response_id"]}
    assert abs(len(audio) / 8 - done["duration_ms"]) <= 20, "8 bytes a millisecond at 8 kHz"
    assert len(audio) / 8000 > 1.5, "a sentence takes more than a second and a half to say"
    await twilio.send("mark", mark=mark["mark"])  # Twilio: the caller has heard it all
    await twilio.stop()
    assert await close_code(comm) == 1000


@LINE
async def test_speaking_over_the_reply_sends_twilio_a_clear_and_the_new_words_count():
    comm, twilio, session = await call_with_a_reply()
    first = await twilio_messages_until(comm, "media")
    assert first[-1]["streamSid"] == STREAM_SID
    await twilio.silence(0.2)
    await twilio.speak(phone_audio("add_milk_to_my_list"))
    await twilio.silence(1.0)
    messages = await twilio_messages_until(comm, "clear")
    assert messages[-1] == {"event": "clear", "streamSid": STREAM_SID}
    assert all(m["event"] == "media" for m in messages[:-1])
    events = await buffered_until(session["id"], "response.audio.interrupted")
    interrupted = events[-1]
    started = next(e for e in events if e["type"] == "response.audio.started")
    assert interrupted["response_id"] == started["response_id"]
    sent_bytes = sum(len(base64.b64decode(m["media"]["payload"])) for m in first + messages[:-1])
    assert sent_bytes < 8 * 3000, "the rest of the reply was not sent"
    # What the caller said over the reply was heard, and its own reply is said in full.
    events = await buffered_until(session["id"], "response.audio.done")
    created = [e["task"]["type"] for e in events if e["type"] == "task.created"]
    assert created == ["reminder", "todo"]
    after = await twilio_messages_until(comm, "mark")
    assert after[-1]["event"] == "mark" and after[-1]["streamSid"] == STREAM_SID
    await comm.disconnect()


@LINE
async def test_the_stream_sends_twilio_nothing_it_does_not_understand():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.connected()
    await twilio.start(params)
    await twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "1"})
    await twilio.send("mark", mark={"name": "reply-1"})
    await twilio.silence(0.5)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@LINE
async def test_a_start_without_a_token_closes_the_stream_with_4401():
    url, _ = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.connected()
    await twilio.start({})
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["close_code"], error["seq"]) == ("error", 4401, 0)
    assert await close_code(comm) == 4401


@LINE
async def test_a_start_with_a_forged_token_closes_the_stream_with_4401():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start({"token": params["token"][:-4] + "AAAA"})
    assert await close_code(comm) == 4401


@LINE
async def test_a_token_is_good_for_one_stream_only():
    url, params = await answer_call()
    first, twilio = await open_stream(url)
    await twilio.start(params)
    await attached()
    second, replay = await open_stream(url)
    await replay.start(params)
    assert await close_code(second) == 4401
    await first.disconnect()


@LINE
async def test_a_stream_of_another_media_format_is_closed_with_4400():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start(params, {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1})
    assert await close_code(comm) == 4400


@LINE
async def test_a_stream_that_never_starts_is_closed():
    with override_settings(CONNECT_WINDOW_SECONDS=0.3):
        url, _ = await answer_call()
        comm, twilio = await open_stream(url)
        await twilio.connected()
        assert await close_code(comm) == 4401


@LINE
async def test_media_before_start_is_an_error_and_the_socket_stays_open():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.silence(0.02)
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "bad_message")
    await twilio.start(params)
    await twilio.silence(0.1)
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


@LINE
async def test_malformed_messages_get_what_ws_voice_gives_them():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start(params)
    await comm.send_to(text_data="{not json")
    bad_json = await comm.receive_json_from(timeout=5)
    assert (bad_json["type"], bad_json["code"]) == ("error", "bad_json")
    assert bad_json["seq"] > 0, "errors on an attached stream take the session's seq"
    await comm.send_json_to({"event": "nonsense", "streamSid": STREAM_SID})
    assert (await comm.receive_json_from(timeout=5))["code"] == "unknown_type"
    await twilio.send("media", media={"track": "inbound", "payload": "%%% not base64"})
    assert (await comm.receive_json_from(timeout=5))["code"] == "bad_audio"
    await comm.send_to(bytes_data=b"\x00" * 160)
    assert (await comm.receive_json_from(timeout=5))["code"] == "bad_message"
    await comm.send_to(text_data="x" * (settings.MAX_FRAME_BYTES + 1))
    assert (await comm.receive_json_from(timeout=5))["close_code"] == 4413
    assert await close_code(comm) == 4413


@LINE
@override_settings(SOCKET_MESSAGE_RATE=0)
async def test_a_run_of_bad_messages_closes_the_stream_with_4400():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start(params)
    for _ in range(settings.PROTOCOL_ERROR_BUDGET + 1):
        await comm.send_to(text_data="[1, 2")
    assert await close_code(comm, timeout=10) == 4400


@LINE
@override_settings(AUDIO_RATE_LIMIT_FACTOR=2.0)
async def test_media_faster_than_twice_real_time_closes_the_stream_with_4429():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start(params)
    await twilio.silence(10)
    assert await close_code(comm) == 4429


@LINE
async def test_a_stream_that_drops_without_stop_ends_its_call_session():
    url, params = await answer_call()
    comm, twilio = await open_stream(url)
    await twilio.start(params)
    await twilio.silence(0.1)
    await comm.disconnect()
    await asyncio.sleep(0.1)
    assert selectors.session_list()[0] == 0
