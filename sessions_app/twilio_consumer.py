"""``/ws/twilio``: Twilio Media Streams, a wire adapter onto the same conversation runtime.

Twilio opens the socket that the webhook's ``<Connect><Stream>`` names, with no credentials
in the URL, and sends ``connected``, then ``start``, whose ``customParameters.token`` is the
session's one-time connect token (``sessions_app.twilio_webhook``). Until a ``start`` with
a valid token arrives no session is attached; a ``start`` without one closes the socket
(4401, or 4404 for a session that has ended), and so does a socket that sends none within
``CONNECT_WINDOW_SECONDS``.

Then, field for field as Twilio's "Media Streams - WebSocket Messages" has them:

* ``media`` (``media.payload``: base64 mu-law, 8 kHz, mono) is audio for the runtime, under
  the same audio rate limit as ``/ws/voice``; a ``media`` of another track is ignored;
* ``dtmf`` ``#`` ends the utterance now (as ``audio.commit``); other digits are ignored;
* ``mark`` (Twilio's echo of a mark this side sent) is noted;
* ``stop`` (the call ended) closes the session, which frees its slot in the line's
  namespace; a socket that goes away without one does the same.

Frames are checked by the same rules as ``/ws/voice`` (``sessions_app.protocol``: frame size,
strict JSON, the message rate, the error budget, the close codes), and a bad one gets the
same ``error`` event; Twilio itself never sends one. Transcripts, tasks and replies go
through the session's one event path as on any socket (replay buffer, group), but Twilio
reads no events: this socket forwards only its own ``error`` events, and speaks replies.

Spoken replies are on by default on this line, whenever a voice is installed
(``synthesis.voices()``): the runtime speaks each ``response`` through
:class:`TwilioAudioOut`, as ``media`` messages (base64 mu-law, 8 kHz, 20 ms each) with the
stream's ``streamSid``, a ``mark`` named by the ``response_id`` after each reply, and a
``clear`` when the caller talks over a reply (barge-in; the runtime tells the reply's echo
from the caller's voice).

The base class is ``VoiceConsumer``: the socket's life (crash handling, clean-up, takeover,
the tick, idle, counters) is the same; what differs is the handshake and the messages.
"""

import asyncio
import base64
import binascii
import json

import structlog
from django.conf import settings

from core import metrics
from sessions_app import services
from sessions_app.audio import synthesis
from sessions_app.audio.speaker import OutputAudio
from sessions_app.consumers import VoiceConsumer
from sessions_app.protocol import (
    close_event,
)
from sessions_app.runtime import short
from sessions_app.telephony import MEDIA_FORMAT
from sessions_app.tokens import token_session

logger = structlog.get_logger(__name__)

MAX_SID_CHARS = 64


class TwilioConsumer(VoiceConsumer):
    stream_sid: str | None = None
    start_timer: asyncio.Task | None = None

    # connect: accept, then wait for ``start`` --------------------------------------------------
    async def connect(self):
        self._open_state()
        self.stream_sid = None
        self.marks_played = 0
        await self.accept()
        self.start_timer = asyncio.get_running_loop().create_task(self._start_deadline())

    async def _start_deadline(self) -> None:
        await asyncio.sleep(settings.CONNECT_WINDOW_SECONDS)
        if self.session_id is None and not self.closing:
            await self._close(4401, "no start with a token")

    async def _start_call(self, *, token: str, stream_sid: str) -> None:
        """The ``start``'s token: claim it, then take the session over as
        ``VoiceConsumer.connect`` does, with the session's audio in Twilio's format."""
        session_id = token_session(token)
        if session_id is None:
            await self._close(4401, "token forged or expired")
            return
        record = await self._claim(session_id, token, self._close)  # accepted: close, not refuse
        if record is None:
            return
        if self.start_timer is not None:
            self.start_timer.cancel()
        self.stream_sid = stream_sid
        await self._attach(session_id, record)
        logger.info("twilio_stream_started", session_id=short(session_id))

    async def _attached(self) -> None:
        """Already accepted (before ``start``): Twilio's audio, and a voice by default."""
        self.runtime.configure_audio("mulaw", 8000)
        voices = synthesis.voices()
        if voices:  # spoken replies are on by default on a phone line (CONTRACT 2c)
            self.runtime.set_output_audio(
                OutputAudio(encoding="mulaw", sample_rate=8000, voice=voices[0]),
                TwilioAudioOut(self),
            )

    async def _greet(self) -> None:
        """Twilio has no greeting message."""

    # disconnect: the call is over ----------------------------------------------------------------
    async def disconnect(self, code):
        """The socket's clean-up, then the session's end: nobody can reconnect to a call (no
        one else holds its token), so its slot in the line's namespace is freed now."""
        if self.start_timer is not None:
            self.start_timer.cancel()
        await super().disconnect(code)
        if self.session_id is not None and not self.replaced:
            try:
                await services.session_aclose(session_id=self.session_id, reason="client")
            except Exception as exc:
                logger.warning("twilio_session_close_failed", error_type=type(exc).__name__)

    # frames from Twilio ------------------------------------------------------------------------
    # Twilio's messages are JSON text named by "event"; frames are read before "start" too.
    KIND_FIELD = "event"
    RATE_FREE_KIND = "media"
    UNKNOWN_KIND = ("unknown_type", "Unknown or missing message event")

    def _accepts_frames(self) -> bool:
        return not self.closing

    async def _binary(self, data: bytes) -> None:
        if await self._message_allowed():
            await self._error("bad_message", "Binary frames are not Twilio messages")

    async def _handler_for(self, message, kind):
        handler = await super()._handler_for(message, kind)
        if handler is not None and self.session_id is None and kind not in ("connected", "start"):
            await self._error("bad_message", "No stream has started: send start first")
            return None
        return handler

    async def on_connected(self, message: dict) -> None:
        """Twilio's greeting (``protocol`` "Call", ``version``): nothing to answer."""

    async def on_start(self, message: dict) -> None:
        if self.session_id is not None:
            await self._error("bad_message", "The stream has already started")
            return
        start = message.get("start")
        if not isinstance(start, dict):
            await self._error("bad_message", "start needs a start object")
            return
        stream_sid = start.get("streamSid", message.get("streamSid"))
        if not isinstance(stream_sid, str) or not 0 < len(stream_sid) <= MAX_SID_CHARS:
            await self._error("bad_message", "start.streamSid must be a stream's SID")
            return
        media_format = start.get("mediaFormat")
        if media_format is not None and media_format != MEDIA_FORMAT:
            await self._close(4400, "mediaFormat must be audio/x-mulaw, 8000 Hz, 1 channel")
            return
        parameters = start.get("customParameters")
        token = parameters.get("token") if isinstance(parameters, dict) else None
        if not isinstance(token, str) or not token:
            await self._close(4401, "token missing")
            return
        await self._start_call(token=token, stream_sid=stream_sid)

    async def on_media(self, message: dict) -> None:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            if await self._message_allowed():  # no audio in it: it counts as a message
                await self._error("bad_audio", "media.payload must be base64 text")
            return
        if media.get("track", "inbound") != "inbound":
            return  # only the caller's audio is speech to recognize
        try:
            chunk = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            if await self._message_allowed():
                await self._error("bad_audio", "media.payload is not valid base64")
            return
        await self.runtime.audio(chunk)

    async def on_dtmf(self, message: dict) -> None:
        dtmf = message.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or not 0 < len(digit) <= 4:
            await self._error("bad_message", "dtmf.digit must be a key")
            return
        if digit == "#":
            self.runtime.commit()  # nothing said yet: nothing to end, and nothing to tell

    async def on_mark(self, message: dict) -> None:
        mark = message.get("mark")
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
            await self._error("bad_message", "mark.name must be text")
            return
        self.marks_played += 1

    async def on_stop(self, message: dict) -> None:
        """The call ended: so does its session (its slot in the line is freed)."""
        if not await services.session_aclose(session_id=self.session_id, reason="client"):
            await self._close(1000, "stream stopped")

    MESSAGE_HANDLERS = {
        "connected": on_connected,
        "start": on_start,
        "media": on_media,
        "dtmf": on_dtmf,
        "mark": on_mark,
        "stop": on_stop,
    }

    # the session's events: Twilio hears only its own errors, and replies as audio ------------
    async def session_event(self, message: dict) -> None:
        event = message["event"]
        if self.closing:
            return
        kind = event["type"]
        if kind == "error":
            await self.send(text_data=json.dumps(event))
        elif kind in ("task.created", "task.updated"):
            self.runtime.track_task(event["task"], from_store=False)
        elif kind == "session.closed":
            await self._close(1000, event.get("reason", "closed"))
        else:
            await self.runtime.on_event(event)  # a response is spoken (TwilioAudioOut)

    # sending before a session is attached -------------------------------------------------------
    async def _send_own(self, event: dict) -> None:
        if self.session_id is None:  # no session: no seq to give (as a refused /ws/voice)
            await self.send(text_data=json.dumps({**event, "seq": 0}))
            return
        await super()._send_own(event)

    async def _close(self, code: int, reason: str) -> None:
        if self.session_id is not None:
            await super()._close(code, reason)
            return
        if self.closing:
            return
        self.closing = True
        logger.info("socket_refused", code=code, reason=reason)
        metrics.SOCKET_CLOSES.labels(code=str(code)).inc()
        if code != 1000:
            await self.send(text_data=json.dumps(close_event(code, reason, seq=0)))
        await self.close(code=code, reason=reason)


class TwilioAudioOut:
    """Spoken replies as Twilio plays them (``sessions_app.audio.speaker.AudioOut``): each
    20 ms frame of mu-law a ``media`` message with the stream's ``streamSid``; a ``mark``
    named by the reply's ``response_id`` after its last frame (Twilio sends the mark back
    once the caller has heard it all); a ``clear`` on barge-in, which drops what Twilio
    has buffered but not yet played."""

    def __init__(self, consumer: TwilioConsumer):
        self.consumer = consumer

    async def _send(self, message: dict) -> None:
        consumer = self.consumer
        if not consumer.closing:
            await consumer.send(text_data=json.dumps(message, separators=(",", ":")))

    async def started(self, response_id: str, encoding: str, sample_rate: int) -> None:
        pass  # Twilio's media needs no announcement

    async def chunk(self, response_id: str, audio: bytes) -> None:
        payload = base64.b64encode(audio).decode("ascii")
        sid = self.consumer.stream_sid
        await self._send({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def done(self, response_id: str, duration_ms: int) -> None:
        sid = self.consumer.stream_sid
        await self._send({"event": "mark", "streamSid": sid, "mark": {"name": response_id}})

    async def interrupted(self, response_id: str, sent_ms: int) -> None:
        await self._send({"event": "clear", "streamSid": self.consumer.stream_sid})
