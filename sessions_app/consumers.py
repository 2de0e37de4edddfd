"""``/ws/voice``: the wire adapter of a voice session's socket (CONTRACT section 2).

It checks the connect token, parses frames (the rules are ``sessions_app.protocol``), turns
them into calls on the session's :class:`~sessions_app.runtime.ConversationRuntime`, and
sends the session's events (from its channel-layer group, on any worker) back as frames. What
the conversation does, audio, dialogue and timers, is the runtime's; this module is the wire.
Audio frames stay in memory: they are counted in process and flushed to the store once per
tick, never one cache write per frame.
"""

import asyncio
import base64
import binascii
import contextlib
import json
import time
from urllib.parse import parse_qs

import structlog
from channels.exceptions import ChannelFull, StopConsumer
from django.conf import settings

from core import clock, metrics
from core.ids import parse_uuid
from core.kv import KVUnavailable
from core.overrides.consumer import FastAsyncWebsocketConsumer
from sessions_app import selectors, services
from sessions_app.audio import synthesis
from sessions_app.audio.formats import ENCODINGS, SAMPLE_RATES
from sessions_app.audio.speaker import OUTPUT_ENCODINGS, OUTPUT_SAMPLE_RATES, OutputAudio
from sessions_app.protocol import (
    MAX_TEXT_CHARS,
    UNAVAILABLE,
    RateLimiter,
    close_event,
    decode_json,
    utf8_size_over,
)
from sessions_app.runtime import ConversationRuntime, TurnDetectionError, log_failure, where

logger = structlog.get_logger(__name__)


class VoiceConsumer(FastAsyncWebsocketConsumer):
    session_id: str | None = None
    conn_gen = 0

    async def __call__(self, scope, receive, send):
        """Serve the socket. Whatever ends it, the cleanup of :meth:`disconnect` runs.

        Frame handlers turn their own exceptions into ``error`` events (:meth:`receive`), so
        what reaches here cannot be recovered: the state store or the channel layer failed
        (1011 "state unavailable"), or a bug outside a frame handler (1011 "internal
        error"). A cancelled application (the server gave up on a gone client) is cleaned
        up as well.
        """
        self._accepted = False
        self._cleaned = False
        code = 1006
        try:
            await self._serve(scope, receive, send)
        except UNAVAILABLE as exc:
            code = 1011
            logger.warning("socket_state_unavailable", error_type=type(exc).__name__)
            await self._fail(send, "state unavailable", stamp=False)
        except Exception as exc:
            code = 1011
            log_failure("socket_failed", self.session_id, exc)
            await self._fail(send, "internal error", stamp=True)
        finally:
            # Shielded: a second cancel must not cut the cleanup short.
            await asyncio.shield(self._cleanup(code))

    async def _fail(self, send, reason: str, *, stamp: bool) -> None:
        """Say why (an ``error`` with ``close_code`` 1011), then close; never raises."""
        metrics.SOCKET_CLOSES.labels(code="1011").inc()
        event = close_event(1011, reason, seq=0)
        if stamp and self.session_id is not None:
            with contextlib.suppress(Exception):
                out = await services.session_aemit(
                    session_id=self.session_id, event=close_event(1011, reason), broadcast=False
                )
                event = out or event
        with contextlib.suppress(Exception):
            if not self._accepted:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(event)})
            await send({"type": "websocket.close", "code": 1011})

    async def _cleanup(self, code: int) -> None:
        """Leave the groups and run :meth:`disconnect`, once, whatever happened before."""
        if self._cleaned:
            return
        self._cleaned = True
        layer = getattr(self, "channel_layer", None)
        for group in self.groups or ():
            with contextlib.suppress(Exception):
                await layer.group_discard(group, self.channel_name)
        try:
            await self.disconnect(code)
        except Exception as exc:
            logger.error("socket_cleanup_failed", error_type=type(exc).__name__, where=where(exc))

    async def accept(self, subprotocol=None, headers=None):
        self._accepted = True
        await super().accept(subprotocol, headers)

    async def websocket_disconnect(self, message):
        """Leave the group and stop (again without the DB clean-up)."""
        await self._cleanup(message.get("code", 1006))
        raise StopConsumer()

    # connect ------------------------------------------------------------------------------------
    async def connect(self):
        """Check the token, take the session over, greet with ``session.ready``."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        session_id = parse_uuid((query.get("session_id") or [""])[0])
        token = (query.get("token") or [""])[0]
        self._open_state()
        if session_id is None:
            await self._refuse(4404, "session not found")
            return
        record = await self._claim(session_id, token, self._refuse)
        if record is not None:
            await self._attach(session_id, record)

    async def _claim(self, session_id: str, token: str, refuse) -> dict | None:
        """Take the session over with its token (``services.asession_connect``): its record,
        or None once ``refuse(code, reason)`` has told the client why not (a refusal, or the
        state store out of reach: 1011)."""
        try:
            return await services.asession_connect(session_id=session_id, token=token)
        except services.ConnectRefused as refused:
            await refuse(refused.code, refused.reason)
        except KVUnavailable:
            await refuse(1011, "state unavailable")
        return None

    def _open_state(self) -> None:
        """What a socket of any dialect starts with, before it is attached to a session."""
        self.groups = []
        self.closing = False
        self.replaced = False
        self.tick_task = None
        self.output_transport = None
        self.errors_in_row = 0
        self.erred = False
        self.refused_in_row = 0
        self.messages = RateLimiter(
            bytes_per_second=1,
            factor=settings.SOCKET_MESSAGE_RATE,
            burst_seconds=settings.SOCKET_MESSAGE_BURST / (settings.SOCKET_MESSAGE_RATE or 1),
        )
        self.replayed_upto = 0
        self.last_activity = time.monotonic()

    async def _attach(self, session_id: str, record: dict) -> None:
        """The session is this socket's: its runtime, its group, accept, the greeting, the
        tick. (Other dialects' adapters authenticate their own way, then call this.)"""
        self.session_id = session_id
        metrics.SOCKETS_OPEN.inc()  # disconnect() takes it back off whenever session_id is set
        self.conn_gen = int(record["conn_gen"])
        self.runtime = ConversationRuntime(
            record=record, send_own=self._send_own, error=self._error, close=self._close
        )
        self.group = services.group_name(session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.groups = [self.group]
        await self._attached()
        await services.session_announce_takeover(session_id=session_id, conn_gen=self.conn_gen)
        await self._greet()
        await self.runtime.watch_tasks()
        self.tick_task = asyncio.get_running_loop().create_task(self._tick_loop())

    async def _attached(self) -> None:
        """The runtime and the group are set up: here, accept the handshake."""
        await self.accept()

    async def _greet(self) -> None:
        """The session is taken over: here, ``session.ready``."""
        await self._send_ready()

    async def _refuse(self, code: int, reason: str) -> None:
        """Accept, say why (seq 0: no session is attached), close with the code."""
        logger.info("socket_refused", code=code, reason=reason)
        metrics.SOCKET_CLOSES.labels(code=str(code)).inc()
        await self.accept()
        await self.send(text_data=json.dumps(close_event(code, reason, seq=0)))
        await self.close(code=code, reason=reason)

    async def _send_ready(self) -> None:
        described = self.runtime.describe()
        if "output_audio" in described:
            described["output_audio"]["transport"] = self.output_transport
        await self._send_own(
            {
                "type": "session.ready",
                **described,
                "limits": {
                    "max_frame_bytes": settings.MAX_FRAME_BYTES,
                    "idle_timeout_seconds": settings.IDLE_TIMEOUT_SECONDS,
                    "max_audio_speed": settings.AUDIO_RATE_LIMIT_FACTOR,
                    "max_message_rate": settings.SOCKET_MESSAGE_RATE,
                    "message_burst": settings.SOCKET_MESSAGE_BURST,
                    "expires_at": clock.iso(self.runtime.expires_at),
                },
            }
        )

    # disconnect ---------------------------------------------------------------------------------
    async def disconnect(self, code):
        """Flush counts; the socket is gone, the session stays until its end of life.

        Runs once per socket, also after a crash (see :meth:`__call__`); each step runs even
        if the one before it failed.
        """
        if self.session_id is None:
            return
        metrics.SOCKETS_OPEN.dec()
        if self.tick_task is not None:
            self.tick_task.cancel()
        try:
            await self.runtime.shutdown(replaced=self.replaced)
        except UNAVAILABLE:
            logger.warning("state_unavailable_on_disconnect", session_id=self.session_id)
        except Exception as exc:
            logger.error("socket_detach_failed", error_type=type(exc).__name__, where=where(exc))
        logger.info("socket_closed", session_id=self.session_id, code=code)

    # frames from the client ---------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        """A frame: binary is audio, text is a JSON message.

        Any exception a frame causes becomes an ``error`` event (``message_failed``) and the
        socket stays open; only the state store or the channel layer failing goes on to
        :meth:`__call__` (1011). The ``try`` costs nothing on the audio path until it raises.
        """
        if not self._accepts_frames():
            return
        self.last_activity = time.monotonic()
        try:
            if bytes_data is not None:
                if len(bytes_data) > settings.MAX_FRAME_BYTES:
                    await self._close(4413, "frame too large")
                    return
                await self._binary(bytes_data)
                return
            if text_data is not None:
                await self._message(text_data)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            log_failure("socket_frame_failed", self.session_id, exc)
            await self._error("message_failed", "The server could not handle that message")

    # What a dialect changes (the Twilio and Realtime adapters subclass this consumer): -------
    KIND_FIELD = "type"  # the field that names a text message's kind
    RATE_FREE_KIND = "audio"  # audio has its own limit, in bytes (the runtime's), not this one
    UNKNOWN_KIND = ("unknown_type", "Unknown or missing message type")

    def _accepts_frames(self) -> bool:
        """Whether frames are read now: here once the socket is attached to its session."""
        return self.session_id is not None and not self.closing

    async def _binary(self, data: bytes) -> None:
        """A binary frame (already checked against ``MAX_FRAME_BYTES``): here, audio."""
        await self.runtime.audio(data)

    def _noted(self, message) -> None:
        """Sees every parsed text message before its rate check (None when not JSON)."""

    async def _handler_for(self, message, kind):
        """The message's handler, or None once the client has been told what is wrong."""
        if message is None:
            await self._error("bad_json", "Frame is not valid JSON")
            return None
        handler = self.MESSAGE_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            await self._error(*self.UNKNOWN_KIND)
        return handler

    async def _message(self, text_data: str) -> None:
        """A text frame: size, JSON, the message rate (not for audio), then its handler."""
        if utf8_size_over(text_data, settings.MAX_FRAME_BYTES):
            await self._close(4413, "frame too large")
            return
        try:
            message = decode_json(text_data)
        except (ValueError, RecursionError):  # nesting too deep for the parser is not JSON
            message = None
        kind = message.get(self.KIND_FIELD) if isinstance(message, dict) else None
        self._noted(message)
        if kind != self.RATE_FREE_KIND and not await self._message_allowed():
            return
        handler = await self._handler_for(message, kind)
        if handler is None:
            return
        self.erred = False
        await handler(self, message)
        if not self.erred:
            self.errors_in_row = 0  # only a message handled without an error ends a run

    async def _message_allowed(self) -> bool:
        """The per-socket message rate (``SOCKET_MESSAGE_RATE`` after ``SOCKET_MESSAGE_BURST``).

        A message past it is dropped; the first of a run of dropped messages gets one
        ``rate_limited`` error with ``retry_after_ms``. More than a burst's worth dropped in
        a row (the client does not slow down) closes the socket with 4429.
        """
        if self.messages.allow(1):
            self.refused_in_row = 0
            return True
        self.messages.refund(1)
        self.refused_in_row += 1
        if self.refused_in_row > settings.SOCKET_MESSAGE_BURST:
            await self._close(4429, "messages faster than the socket's message rate")
        elif self.refused_in_row == 1:
            await self._send_own(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "message": "Too many messages; this one was dropped. Slow down.",
                    "retry_after_ms": int(self.messages.wait_for(1) * 1000) + 1,
                }
            )
        return False

    async def on_session_update(self, message: dict) -> None:
        audio = message.get("audio")
        zone = message.get("timezone")
        has_turns = "turn_detection" in message  # null is a value: manual turns
        if "output_audio" in message:
            if not await self._set_output_audio(message["output_audio"]):
                return
            if audio is None and zone is None and not has_turns:
                await self._send_ready()
                return
        if audio is None and zone is None and not has_turns:
            await self._error(
                "bad_message",
                "session.update needs audio, output_audio, timezone or turn_detection",
            )
            return
        if has_turns:
            try:
                self.runtime.set_turn_detection(message["turn_detection"])
            except TurnDetectionError as exc:
                await self._error("bad_turn_detection", str(exc))
                return
            if audio is None and zone is None:
                await self._send_ready()
                return
        if zone is not None:
            if not clock.zone_valid(zone):
                await self._error("bad_timezone", "Unknown time zone: use an IANA name")
                return
            await self.runtime.set_zone(zone)
            if audio is None:
                await self._send_ready()
                return
        if not isinstance(audio, dict):
            await self._error("bad_message", "session.update audio must be an object")
            return
        encoding = audio.get("encoding", self.runtime.pipeline.encoding)
        rate = audio.get("sample_rate", self.runtime.pipeline.sample_rate)
        if encoding not in ENCODINGS or type(rate) is not int or rate not in SAMPLE_RATES:
            await self._error("bad_audio_format", "Unsupported encoding or sample rate")
            return
        if self.runtime.audio_started:
            await self._error("audio_already_started", "Change the format before any audio")
            return
        self.runtime.configure_audio(encoding, rate)
        await self._send_ready()

    async def _set_output_audio(self, spec) -> bool:
        """``output_audio`` of a ``session.update`` (CONTRACT 2b); False after an error."""
        if spec is None or (isinstance(spec, dict) and "voice" in spec and spec["voice"] is None):
            self.runtime.set_output_audio(None)
            self.output_transport = None
            return True
        if not isinstance(spec, dict):
            await self._error("bad_message", "output_audio must be an object or null")
            return False
        current = self.runtime.output
        encoding = spec.get("encoding", current.encoding if current else "pcm_s16le")
        rate = spec.get("sample_rate", current.sample_rate if current else 16000)
        transport = spec.get("transport", self.output_transport or "binary")
        if (
            encoding not in OUTPUT_ENCODINGS
            or type(rate) is not int
            or rate not in OUTPUT_SAMPLE_RATES
            or (encoding == "mulaw" and rate != 8000)
        ):
            await self._error(
                "bad_audio_format",
                "Output audio is pcm_s16le at 8, 16, 24 or 48 kHz, or mulaw at 8 kHz",
            )
            return False
        if transport not in ("binary", "base64"):
            await self._error("bad_message", "output_audio.transport is binary or base64")
            return False
        voices = synthesis.voices()
        if not voices:
            await self._error("no_voices", "This server has no voice: replies are text only")
            return False
        voice = spec.get("voice", current.voice if current else voices[0])
        if voice not in voices:
            await self._error("bad_voice", "Unknown voice: session.ready lists the voices")
            return False
        self.output_transport = transport
        self.runtime.set_output_audio(
            OutputAudio(encoding=encoding, sample_rate=rate, voice=voice), _WireAudioOut(self)
        )
        return True

    async def on_response_cancel(self, message: dict) -> None:
        await self.runtime.cancel_reply()  # nothing playing: nothing to do, and no error

    async def on_audio(self, message: dict) -> None:
        data = message.get("data")
        if not isinstance(data, str):
            if await self._message_allowed():  # no audio in it: it counts as a message
                await self._error("bad_audio", "audio.data must be base64 text")
            return
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            if await self._message_allowed():
                await self._error("bad_audio", "audio.data is not valid base64")
            return
        await self.runtime.audio(chunk)

    async def on_audio_commit(self, message: dict) -> None:
        if not self.runtime.commit():
            await self._error("empty_commit", "There is no speech to commit")

    async def on_text(self, message: dict) -> None:
        text = message.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
            await self._error("bad_text", f"text must be 1 to {MAX_TEXT_CHARS} characters")
            return
        await self.runtime.utterance(text.strip(), utterance_id=None)

    async def on_ping(self, message: dict) -> None:
        await self._send_own({"type": "pong"})

    async def on_session_close(self, message: dict) -> None:
        if not await services.session_aclose(session_id=self.session_id, reason="client"):
            await self._close(1000, "session closed")

    async def on_session_resume(self, message: dict) -> None:
        last_seq = message.get("last_seq")
        if type(last_seq) is not int or not 0 <= last_seq < 2**53:
            await self._error("bad_message", "last_seq must be a whole number >= 0")
            return
        events, lost = await selectors.asession_replay(
            session_id=self.session_id, after_seq=last_seq
        )
        if lost:
            await self._error(
                "events_lost", "Some events after last_seq are no longer buffered", counts=False
            )
        for event in events:
            await self.send(text_data=json.dumps(event))
            self.replayed_upto = max(self.replayed_upto, event["seq"])

    MESSAGE_HANDLERS = {
        "session.update": on_session_update,
        "audio": on_audio,
        "audio.commit": on_audio_commit,
        "text": on_text,
        "ping": on_ping,
        "session.close": on_session_close,
        "session.resume": on_session_resume,
        "response.cancel": on_response_cancel,
    }

    # group events -------------------------------------------------------------------------------
    async def session_event(self, message: dict) -> None:
        """An event of the session, from any worker: forward it."""
        event = message["event"]
        if event.get("seq", 0) <= self.replayed_upto:
            return  # already sent by a resume
        if self.closing:
            return
        await self.send(text_data=json.dumps(event))
        if event["type"] in ("task.created", "task.updated"):
            self.runtime.track_task(event["task"], from_store=False)
        elif event["type"] == "session.closed":
            await self._close(1000, event.get("reason", "closed"))
        else:
            await self.runtime.on_event(event)  # a response is spoken, when audio out is on

    async def session_takeover(self, message: dict) -> None:
        """A newer socket of this session attached somewhere: this one is replaced."""
        if int(message["conn_gen"]) > self.conn_gen and not self.closing:
            self.replaced = True
            await self._close(4409, "replaced by a newer connection")

    async def layer_overflow(self, message: dict) -> None:
        """This socket's queue in the in-memory layer was full: events were not delivered."""
        await self._error(
            "events_lost",
            "Some events could not be delivered; send session.resume with the last seq you saw",
            counts=False,
        )

    # the tick: counters, idle, end of life, drafts --------------------------------------------
    async def _tick_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(settings.SOCKET_TICK_SECONDS)
            try:
                await self._tick()
            except KVUnavailable:
                logger.warning("state_unavailable_on_tick", session_id=self.session_id)
            except Exception:
                logger.exception("socket_tick_failed", session_id=self.session_id)

    async def _tick(self) -> None:
        """The wire's own check (idle), then the runtime's timers."""
        if time.monotonic() - self.last_activity > settings.IDLE_TIMEOUT_SECONDS:
            await self._close(4408, "idle timeout")
            return
        await self.runtime.tick()

    # sending ------------------------------------------------------------------------------------
    async def _send_own(self, event: dict) -> None:
        """An event for this socket only: it gets a seq, but no other socket sees it.

        It goes through this socket's own channel, behind the group events already queued
        there, so that events reach the client in the order their seqs were given.
        """
        out = await services.session_aemit(session_id=self.session_id, event=event, broadcast=False)
        if out is not None:
            try:
                await self.channel_layer.send(
                    self.channel_name, {"type": "session.event", "event": out}
                )
            except ChannelFull:  # never dropped: sent now, ahead of the queued events
                await self.send(text_data=json.dumps(out))

    async def _error(self, code: str, message: str, *, counts: bool = True) -> None:
        """A recoverable error: the socket stays open, until too many come in a row (4400)."""
        if counts:
            self.erred = True
            self.errors_in_row += 1
            if self.errors_in_row > settings.PROTOCOL_ERROR_BUDGET:
                await self._close(4400, "too many protocol errors")
                return
        await self._send_own({"type": "error", "code": code, "message": message})

    async def _close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        logger.info("socket_closing", session_id=self.session_id, code=code, reason=reason)
        metrics.SOCKET_CLOSES.labels(code=str(code)).inc()
        if code != 1000:
            try:
                out = await services.session_aemit(
                    session_id=self.session_id, event=close_event(code, reason), broadcast=False
                )
            except KVUnavailable:
                out = close_event(code, reason, seq=0)
            if out is not None:
                await self.send(text_data=json.dumps(out))
        await self.close(code=code, reason=reason)


class _WireAudioOut:
    """Reply audio on ``/ws/voice``: binary frames, or ``response.audio.delta`` events (no
    seq: audio is never buffered nor replayed), as the client's ``output_audio.transport``
    says. The started/done/interrupted events go out through the session's event path."""

    def __init__(self, consumer: VoiceConsumer):
        self.consumer = consumer

    async def started(self, response_id: str, encoding: str, sample_rate: int) -> None:
        pass

    async def chunk(self, response_id: str, audio: bytes) -> None:
        consumer = self.consumer
        if consumer.closing:
            return
        if consumer.output_transport == "base64":
            delta = {
                "type": "response.audio.delta",
                "response_id": response_id,
                "data": base64.b64encode(audio).decode("ascii"),
            }
            await consumer.send(text_data=json.dumps(delta))
        else:
            await consumer.send(bytes_data=audio)

    async def done(self, response_id: str, duration_ms: int) -> None:
        pass

    async def interrupted(self, response_id: str, sent_ms: int) -> None:
        pass
