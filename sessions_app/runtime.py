"""The conversation runtime: one per connected session, whatever wire it came in on.

It owns audio in (decode, VAD, the recognizer through :class:`AudioPipeline`), the dialogue
(a final utterance, spoken or typed, to intents, tasks and a reply), the timers (drafts that
expire, the session's end of life, the counters flushed once a tick) and the session's status.
Events go out through the session's one event path (``seq``, replay buffer, group send), so
every socket of the session hears them. It knows nothing about the wire: an adapter (the
``/ws/voice`` consumer, and later other dialects) parses frames into calls on it and gives it
three callables: ``send_own`` (an event for this connection only), ``error`` (a recoverable
error for the client) and ``close`` (end the connection with a close code).

Audio out (spoken replies, barge-in; CONTRACT 2b) is off until an adapter calls
:meth:`ConversationRuntime.set_output_audio` with a format and an
:class:`~sessions_app.audio.speaker.AudioOut`; the adapter then passes every session event it
delivers to :meth:`ConversationRuntime.on_event`, and the runtime speaks each ``response``.
See ``sessions_app/audio/speaker.py`` for the order of calls.
"""

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from django.conf import settings

from core import clock, metrics
from core.kv import KVUnavailable
from sessions_app import services
from sessions_app.audio import synthesis, turns
from sessions_app.audio.formats import bytes_per_second
from sessions_app.audio.pipeline import AudioPipeline, Backlogged, FormatError
from sessions_app.audio.recognizer import TranscriptionError as TranscriptionError  # adapters
from sessions_app.audio.recognizer import check_transcription
from sessions_app.audio.speaker import AudioOut, EchoGuard, Encoder, OutputAudio, Pacer
from sessions_app.audio.turns import TurnDetectionError as TurnDetectionError  # for adapters
from sessions_app.protocol import RateLimiter
from tasks_app import selectors as task_selectors
from tasks_app import services as task_services

logger = structlog.get_logger(__name__)

FAILURE_MESSAGES = {
    "": "Nothing was recognized in that utterance",
    "recognizer_busy": "Every recognizer is busy; that utterance was not recognized. Try again",
}
_handle_utterance = task_services.autterance_handle
_expire_draft = task_services.atask_expire_draft
_list_tasks = task_selectors.atask_list
ANNOUNCE_WAIT_S = 1.0  # how long a reply's audio waits for its started event to go out


def short(session_id: str | None) -> str | None:
    """An id as logs carry it: its first 8 characters (the log filter cuts them too)."""
    return session_id[:8] if session_id else session_id


def where(exc: BaseException) -> str:
    """Where an exception was raised, as ``file:line``: for logs, never its message (which
    may quote what the user said)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def log_failure(event: str, session_id: str | None, exc: BaseException) -> None:
    """An error log line of a failure on a session's path: what and where, never its message."""
    logger.error(
        event, session_id=short(session_id), error_type=type(exc).__name__, where=where(exc)
    )


class _Reply:
    """One reply to speak: its text, the seq of its ``response`` event, how far it got."""

    def __init__(self, text: str, seq: int | None):
        self.text, self.seq = text, seq
        self.response_id = "resp_" + uuid.uuid4().hex[:16]
        self.config: OutputAudio | None = None
        self.pacer = Pacer()
        self.delivered = asyncio.Event()
        self.announced = self.stopped = self.in_send = False


class ConversationRuntime:
    """One connected session's conversation (see the module's docstring)."""

    def __init__(
        self,
        *,
        record: dict,
        send_own: Callable[[dict], Awaitable[None]],
        error: Callable[..., Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
    ):
        self.session_id = record["id"]
        self.conn_gen = int(record["conn_gen"])
        self.zone = record.get("timezone") or "UTC"
        # A session created with ``"intents": false`` only transcribes (sessions_app.services).
        self.intents = record.get("intents") != "off"
        self.expires_at = float(record["expires_at"])
        self.send_own, self.error, self.close = send_own, error, close
        self.rx = self.processed = 0
        self.audio_started = False
        self.alive_sent = time.monotonic()
        self.drafts: dict[str, float] = {}
        self.pipeline: AudioPipeline | None = None
        # audio out (off until an adapter asks): the reply playing, those waiting, the echo
        self.output: OutputAudio | None = None
        self.audio_out: AudioOut | None = None
        self.echo: EchoGuard | None = None
        self.echo_utterances: set[str] = set()
        self.replies: deque[_Reply] = deque()
        self.current: _Reply | None = None
        self.player: asyncio.Task | None = None
        self.configure_audio("pcm_s16le", 16000)
        self.pipeline.warm()  # the recognizer workers start loading while the client sets up

    # what the connection is ------------------------------------------------------------------
    def describe(self) -> dict:
        """The session's side of ``session.ready``: its id, zone, audio format, turn detection,
        voices and output audio."""
        out = {
            "session_id": self.session_id,
            "timezone": self.zone,
            "audio": {
                "encoding": self.pipeline.encoding,
                "sample_rate": self.pipeline.sample_rate,
                "channels": 1,
            },
            "turn_detection": self.pipeline.turns.as_dict(),
            "voices": synthesis.voices(),
        }
        if self.output is not None:
            out["output_audio"] = {
                "encoding": self.output.encoding,
                "sample_rate": self.output.sample_rate,
                "voice": self.output.voice,
            }
        return out

    async def watch_tasks(self) -> None:
        """Pick up drafts still to expire (after a reconnect); reminders announce themselves
        when the scheduler runs them (tasks_app.scheduler)."""
        for task in await _list_tasks(session_id=self.session_id):
            self.track_task(task, from_store=True)

    def track_task(self, task: dict, *, from_store: bool) -> None:
        task_id = task["id"]
        if task["state"] == "draft":
            created_ts = float(task["created_at"]) if from_store else clock.now()
            self.drafts[task_id] = created_ts + settings.DRAFT_TTL_SECONDS
        else:
            self.drafts.pop(task_id, None)

    async def set_zone(self, zone: str) -> None:
        """The session's IANA time zone (already checked): times are read and spoken in it."""
        self.zone = zone
        await services.asession_set_timezone(session_id=self.session_id, timezone=zone)

    # audio in --------------------------------------------------------------------------------
    def configure_audio(self, encoding: str, sample_rate: int) -> None:
        current = self.pipeline.turns if self.pipeline is not None else turns.DEFAULT
        previous = self.pipeline
        self.pipeline = AudioPipeline(
            encoding=encoding, sample_rate=sample_rate, sink=self, turns=current
        )
        if previous is not None:
            self.pipeline.language, self.pipeline.hints = previous.language, previous.hints
        self.rate = RateLimiter(
            bytes_per_second=bytes_per_second(encoding, sample_rate),
            factor=settings.AUDIO_RATE_LIMIT_FACTOR,
            burst_seconds=settings.AUDIO_RATE_BURST_SECONDS,
        )
        if self.output is not None:
            self.echo = EchoGuard(encoding, sample_rate, self.output)

    def set_turn_detection(self, config: dict | None) -> dict:
        """The session's turn detection, as OpenAI Realtime's ``turn_detection`` has it (see
        ``sessions_app.audio.turns``), from now on, also in the middle of an utterance.

        Returns what ``session.ready`` will report. Raises :class:`TurnDetectionError` (its
        ``str()`` is fit for the client) and changes nothing when ``config`` is not valid.
        """
        parsed = turns.parse(config)
        self.pipeline.set_turns(parsed)
        return parsed.as_dict()

    def set_transcription(self, *, language: str | None = None, hints=None) -> dict:
        """The language and phrase hints the session's recognizer is told, from the next
        utterance on. Raises :class:`TranscriptionError` (``str()`` fit for the client) and
        changes nothing when the engine does not support the language or the hints are bad."""
        language, hints = check_transcription(
            self.pipeline.capabilities(),
            self.pipeline.language if language is None else language,
            self.pipeline.hints if hints is None else hints,
        )
        self.pipeline.language, self.pipeline.hints = language, hints
        return {"language": language, "hints": list(hints)}

    async def audio(self, chunk: bytes) -> None:
        """The hot path: rate check, count, decode and VAD in memory."""
        if not self.rate.allow(len(chunk)):
            await self.close(4429, "audio faster than real time")
            return
        if self.echo is not None and self.echo.active():
            self.echo.heard(chunk)  # a reply is live: keep what came in, to tell its echo
        self.audio_started = True
        self.rx += 1
        try:
            self.pipeline.feed(chunk)
        except FormatError:
            await self.error("bad_audio", "Audio frame does not match the session's format")
            return
        except Backlogged:
            await self.close(4429, "recognition cannot keep up")
            return
        self.processed += 1

    def commit(self) -> bool:
        """End the utterance now (push-to-talk released); False when there is none."""
        return self.pipeline.commit()

    @property
    def utterance_id(self) -> str | None:
        """The id of the utterance in progress (the one its transcripts will carry), if any:
        an adapter that must say where in the audio an utterance began reads it per frame."""
        utterance = self.pipeline.utterance
        return utterance.id if utterance is not None else None

    async def discard(self) -> bool:
        """Drop the utterance in progress unrecognized (no final, no failure); False when there
        is none. The session is ``connected`` again."""
        if not self.pipeline.discard():
            return False
        await self.status("connected")
        return True

    # the pipeline's sink ---------------------------------------------------------------------
    async def speech_started(self) -> None:
        """Speech began. While a reply is live this is barge-in, unless it is the reply's
        own echo (then the utterance is not recognised as the user's)."""
        cut = None
        if self.echo is not None and self.echo.active() and self.echo.is_echo():
            if self.pipeline.utterance is not None:
                self.echo_utterances.add(self.pipeline.utterance.id)
        elif self.current is not None or self.replies:
            out = self.audio_out
            cut = self._stop_now()  # no frame is sent after this line
            if cut is not None:
                await self._tell_adapter(out, cut)  # e.g. a telephony "clear", first
        await self.emit({"type": "speech.started"})
        if cut is not None:
            await self._report_cut(cut, cut.pacer.sent_ms)
        await self.status("listening")

    async def speech_stopped(self) -> None:
        await self.emit({"type": "speech.stopped"})
        await self.status("processing")

    async def partial(self, utterance_id: str, text: str) -> None:
        if utterance_id in self.echo_utterances:
            return
        await self.emit({"type": "transcript.partial", "utterance_id": utterance_id, "text": text})

    async def final(self, utterance_id: str, text: str, *, confidence: float | None = None) -> None:
        if utterance_id in self.echo_utterances:
            self.echo_utterances.discard(utterance_id)  # the reply heard itself: not a turn
            await self.status("connected")
            return
        event = {"type": "transcript.final", "utterance_id": utterance_id, "text": text}
        if confidence is not None:
            event["confidence"] = round(confidence, 3)
        await self.emit(event)
        if self.intents:
            await self.utterance(text, utterance_id=utterance_id)
        else:
            await self.status("connected")

    async def failed(self, utterance_id: str, code: str) -> None:
        if utterance_id in self.echo_utterances:
            self.echo_utterances.discard(utterance_id)
            await self.status("connected")
            return
        await self.error(code, FAILURE_MESSAGES.get(code, FAILURE_MESSAGES[""]), counts=False)
        await self.status("connected")

    # the dialogue ----------------------------------------------------------------------------
    async def utterance(self, text: str, *, utterance_id: str | None) -> None:
        """A final utterance, spoken or typed, to intents and tasks (off the loop).

        Whatever goes wrong on the way is an ``error`` event, and the session's status goes
        back to ``connected``: events already sent (a stored draft's ``task.created``) stay.
        """
        await self.status("processing")
        metrics.UTTERANCES.labels(source="text" if utterance_id is None else "speech").inc()
        try:
            await _handle_utterance(
                session_id=self.session_id,
                text=text,
                utterance_id=utterance_id or str(uuid.uuid4()),
                zone=self.zone,
            )
        except KVUnavailable:
            await self.error("state_unavailable", "Try again shortly", counts=False)
        except Exception as exc:
            log_failure("utterance_failed", self.session_id, exc)
            await self.error(
                "utterance_failed", "That could not be handled; please try again", counts=False
            )
        await self.status("connected")

    # audio out: spoken replies and barge-in (CONTRACT 2b) ----------------------------------
    def set_output_audio(self, config: OutputAudio | None, out: AudioOut | None = None) -> None:
        """Speak replies in ``config``'s format through ``out`` (None: replies are text only
        again). A reply playing when the format changes is cut off (``interrupted``).

        ``config.voice`` must be one of :func:`synthesis.voices` (the adapter checks).
        """
        if self.current is not None or self.replies:
            self._spawn_cut()
        self.output = config
        self.audio_out = out if config is not None else None
        self.echo = (
            None
            if config is None
            else EchoGuard(self.pipeline.encoding, self.pipeline.sample_rate, config)
        )
        if config is not None:
            synthesis.get_pool().warm()  # the worker loads the voice before the first reply

    async def on_event(self, event: dict) -> None:
        """Every session event the adapter delivers to its client comes through here: a
        ``response`` is spoken (when audio out is on), in turn after any reply playing."""
        kind = event.get("type")
        if kind == "response" and self.output is not None and event.get("text"):
            self.replies.append(_Reply(event["text"], event.get("seq")))
            if self.player is None or self.player.done():
                self.player = asyncio.get_running_loop().create_task(self._play_all())
        elif kind == "response.audio.started":
            reply = self.current
            if reply is not None and reply.response_id == event.get("response_id"):
                reply.delivered.set()

    async def cancel_reply(self) -> bool:
        """``response.cancel``: stop the reply playing now; False when none was."""
        if self.current is None and not self.replies:
            return False
        out = self.audio_out
        reply = self._stop_now()
        if reply is not None:
            await self._tell_adapter(out, reply)
            await self._report_cut(reply, reply.pacer.sent_ms)
        return True

    def _stop_now(self) -> "_Reply | None":
        """Stop sending at once (the frame being written, if any, is the last) and drop the
        replies waiting; the reply cut off, when the client was told it started."""
        reply, self.current = self.current, None
        self.replies.clear()
        task, self.player = self.player, None
        if reply is not None:
            reply.stopped = True
        if task is not None and not (reply is not None and reply.in_send):
            task.cancel()  # mid-write, the flag stops it after the write instead
        return reply if reply is not None and reply.announced else None

    @staticmethod
    async def _tell_adapter(out: AudioOut | None, reply: "_Reply") -> None:
        if out is not None:
            try:
                await out.interrupted(reply.response_id, reply.pacer.sent_ms)
            except Exception as exc:
                logger.warning("audio_out_interrupted_failed", error_type=type(exc).__name__)

    def _spawn_cut(self) -> None:
        out = self.audio_out
        reply = self._stop_now()
        if reply is None:
            return

        async def tell():
            await self._tell_adapter(out, reply)
            await self._report_cut(reply, reply.pacer.sent_ms)

        asyncio.get_running_loop().create_task(tell())

    async def _report_cut(self, reply: "_Reply", sent_ms: int) -> None:
        await self.emit(
            {
                "type": "response.audio.interrupted",
                "response_id": reply.response_id,
                "sent_ms": sent_ms,
            }
        )
        try:
            await services.asession_reply_cut_off(
                session_id=self.session_id, response_seq=reply.seq, sent_ms=sent_ms
            )
        except Exception as exc:
            log_failure("reply_cut_off_failed", self.session_id, exc)

    async def _play_all(self) -> None:
        me = asyncio.current_task()
        # A player cut off mid-write finishes that write after a newer one took over: it
        # leaves the replies to the newer one.
        while self.replies and self.output is not None and self.player is me:
            reply = self.current = self.replies.popleft()
            try:
                await self._play(reply, self.output, self.audio_out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure("reply_audio_failed", self.session_id, exc)
            finally:
                if self.current is reply:
                    self.current = None

    async def _play(self, reply: "_Reply", config: OutputAudio, out: AudioOut) -> None:
        """Synthesise (in a worker, chunk by chunk), encode, pace and send one reply."""
        encoder = None
        reply.config = config
        stream = synthesis.get_pool().stream(reply.text, config.voice)
        try:
            async for pcm, rate in stream:
                if encoder is None:
                    encoder = Encoder(config, rate)
                    await self._announce(reply, config, out)
                for frame in encoder.frames(pcm):
                    await self._send_frame(reply, frame, out)
                    if reply.stopped:
                        return
            if encoder is not None:
                for frame in encoder.flush():
                    await self._send_frame(reply, frame, out)
                    if reply.stopped:
                        return
        except synthesis.SynthesisFailed:
            logger.warning("synthesis_failed", session_id=short(self.session_id))
            if encoder is None:
                await self.error("speech_failed", "That reply could not be spoken", counts=False)
                return
        finally:
            await stream.aclose()
        if encoder is None:
            return
        await out.done(reply.response_id, reply.pacer.sent_ms)
        if self.current is reply:
            self.current = None
        await self.emit(
            {
                "type": "response.audio.done",
                "response_id": reply.response_id,
                "duration_ms": reply.pacer.sent_ms,
            }
        )

    async def _announce(self, reply: "_Reply", config: OutputAudio, out: AudioOut) -> None:
        """``response.audio.started`` through the event path; the audio follows it on the
        wire once it has come back to this connection (at most ``ANNOUNCE_WAIT_S``)."""
        reply.announced = True
        await self.emit(
            {
                "type": "response.audio.started",
                "response_id": reply.response_id,
                "encoding": config.encoding,
                "sample_rate": config.sample_rate,
                "response_seq": reply.seq,
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reply.delivered.wait(), ANNOUNCE_WAIT_S)
        await out.started(reply.response_id, config.encoding, config.sample_rate)

    async def _send_frame(self, reply: "_Reply", frame: bytes, out: AudioOut) -> None:
        wait = reply.pacer.wait()
        if wait > 0:
            await asyncio.sleep(wait)
        if reply.stopped:
            return
        reply.in_send = True
        try:
            await out.chunk(reply.response_id, frame)
        finally:
            reply.in_send = False
        reply.pacer.sent_ms += reply.config.ms_of(len(frame))
        if self.echo is not None:
            self.echo.sent(frame)
            self.echo.playing(reply.pacer.lead)

    # the timers ------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Counters, the socket's heartbeat, the session's end of life, drafts to expire."""
        await self.flush_counters()
        if time.monotonic() - self.alive_sent > settings.SOCKET_ALIVE_SECONDS:
            self.alive_sent = time.monotonic()
            await services.asession_socket_alive(
                session_id=self.session_id, conn_gen=self.conn_gen, now=clock.now()
            )
        now = clock.now()
        if now >= self.expires_at:
            if not await services.session_aclose(session_id=self.session_id, reason="expired"):
                await self.close(1000, "session expired")
            return
        for task_id, due in list(self.drafts.items()):
            if now >= due:
                self.drafts.pop(task_id, None)
                await _expire_draft(task_id=task_id)

    async def flush_counters(self) -> None:
        if self.rx or self.processed:
            deltas = {
                "audio_chunks_received": self.rx,
                "audio_chunks_processed": self.processed,
            }
            self.rx = self.processed = 0
            metrics.AUDIO_FRAMES_RECEIVED.inc(deltas["audio_chunks_received"])
            metrics.AUDIO_FRAMES_PROCESSED.inc(deltas["audio_chunks_processed"])
            await services.asession_counters_add(session_id=self.session_id, deltas=deltas)

    # events out and status -------------------------------------------------------------------
    async def emit(self, event: dict) -> None:
        """An event for every socket of the session (next seq, buffered for resume)."""
        await services.session_aemit(session_id=self.session_id, event=event)

    async def status(self, status: str) -> None:
        await services.asession_set_status(
            session_id=self.session_id, status=status, conn_gen=self.conn_gen
        )

    async def shutdown(self, *, replaced: bool) -> None:
        """The connection is gone: recognizer back to the pool, counters flushed, and the
        session waits for a reconnect (unless a newer connection took it over). Each step
        runs even if the one before failed."""
        self.replies.clear()
        if self.player is not None:
            self.player.cancel()  # nobody to speak to: the reply stops without events
        try:
            await self.pipeline.close()  # its recognizer goes back to the pool
        except Exception as exc:
            logger.error("pipeline_close_failed", error_type=type(exc).__name__)
        await self.flush_counters()
        if not replaced:
            await services.asession_detach(session_id=self.session_id, conn_gen=self.conn_gen)
