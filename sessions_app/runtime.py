"""The conversation runtime: one per connected session, whatever wire it came in on.

It owns audio in (decode, VAD, the recognizer through :class:`AudioPipeline`), the dialogue
(a final utterance, spoken or typed, to intents, tasks and a reply), the timers (drafts that
expire, the session's end of life, the counters flushed once a tick) and the session's status.
Events go out through the session's one event path (``seq``, replay buffer, group send), so
every socket of the session hears them. It knows nothing about the wire: an adapter (the
``/ws/voice`` consumer, and later other dialects) parses frames into calls on it and gives it
three callables: ``send_own`` (an event for this connection only), ``error`` (a recoverable
error for the client) and ``close`` (end the connection with a close code).
"""

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from django.conf import settings

from core import clock, metrics
from core.kv import KVUnavailable
from sessions_app import services
from sessions_app.audio.formats import bytes_per_second
from sessions_app.audio.pipeline import AudioPipeline, Backlogged, FormatError
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
        self.expires_at = float(record["expires_at"])
        self.send_own, self.error, self.close = send_own, error, close
        self.rx = self.processed = 0
        self.audio_started = False
        self.alive_sent = time.monotonic()
        self.drafts: dict[str, float] = {}
        self.pipeline: AudioPipeline | None = None
        self.configure_audio("pcm_s16le", 16000)

    # what the connection is ------------------------------------------------------------------
    def describe(self) -> dict:
        """The session's side of ``session.ready``: its id, zone and audio format."""
        return {
            "session_id": self.session_id,
            "timezone": self.zone,
            "audio": {
                "encoding": self.pipeline.encoding,
                "sample_rate": self.pipeline.sample_rate,
                "channels": 1,
            },
        }

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
        self.pipeline = AudioPipeline(encoding=encoding, sample_rate=sample_rate, sink=self)
        self.rate = RateLimiter(
            bytes_per_second=bytes_per_second(encoding, sample_rate),
            factor=settings.AUDIO_RATE_LIMIT_FACTOR,
            burst_seconds=settings.AUDIO_RATE_BURST_SECONDS,
        )

    async def audio(self, chunk: bytes) -> None:
        """The hot path: rate check, count, decode and VAD in memory."""
        if not self.rate.allow(len(chunk)):
            await self.close(4429, "audio faster than real time")
            return
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

    # the pipeline's sink ---------------------------------------------------------------------
    async def speech_started(self) -> None:
        await self.emit({"type": "speech.started"})
        await self.status("listening")

    async def speech_stopped(self) -> None:
        await self.emit({"type": "speech.stopped"})
        await self.status("processing")

    async def partial(self, utterance_id: str, text: str) -> None:
        await self.emit({"type": "transcript.partial", "utterance_id": utterance_id, "text": text})

    async def final(self, utterance_id: str, text: str) -> None:
        await self.emit({"type": "transcript.final", "utterance_id": utterance_id, "text": text})
        await self.utterance(text, utterance_id=utterance_id)

    async def failed(self, utterance_id: str, code: str) -> None:
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
        try:
            await self.pipeline.close()  # its recognizer goes back to the pool
        except Exception as exc:
            logger.error("pipeline_close_failed", error_type=type(exc).__name__)
        await self.flush_counters()
        if not replaced:
            await services.asession_detach(session_id=self.session_id, conn_gen=self.conn_gen)
