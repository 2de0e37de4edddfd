"""One connection's audio path: decode, resample, VAD, then recognition in the pool.

:meth:`AudioPipeline.feed` is the hot path. It runs on the event loop for every audio frame
and does only in-memory work (numpy decode, soxr, WebRTC VAD, appending bytes): no cache
round trip and no thread hop. Recognition of an utterance runs in one asyncio task that sends
its audio to a pooled recognizer in batches of ``BATCH_BYTES``.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from django.conf import settings

from core.metrics import RECOGNITION_LATENCY
from sessions_app.audio.endpointing import silence_needed
from sessions_app.audio.formats import TARGET_RATE, Decoder, FormatError
from sessions_app.audio.recognizer import Capabilities, RecognizerBusy, get_pool
from sessions_app.audio.turns import DEFAULT as DEFAULT_TURNS
from sessions_app.audio.turns import TurnDetection
from sessions_app.audio.vad import Segmenter

logger = structlog.get_logger(__name__)

BATCH_BYTES = TARGET_RATE * 2 // 5  # 200 ms
MAX_BACKLOG_BYTES = TARGET_RATE * 2 * 15  # 15 s of speech waiting for the recognizer
MIN_UTTERANCE_BYTES = TARGET_RATE * 2 // 5  # shorter than 200 ms is not a command
MAX_UTTERANCE_BYTES = TARGET_RATE * 2 * 30  # a 30 s utterance is ended, as if by a pause


class Backlogged(Exception):
    """Audio arrives faster than recognition keeps up, past the bounded backlog."""


class Sink:
    """What the pipeline reports; the consumer implements it."""

    speech_started: Callable[[], Awaitable[None]]
    speech_stopped: Callable[[], Awaitable[None]]
    partial: Callable[[str, str], Awaitable[None]]
    final: Callable[..., Awaitable[None]]  # (utterance_id, text, *, confidence)
    failed: Callable[[str, str], Awaitable[None]]


class _Utterance:
    def __init__(self):
        self.id = str(uuid.uuid4())
        self.pending = bytearray()
        self.total = 0
        self.ended = False
        self.dropped = False  # recognition gave up on it: its audio is no longer kept
        self.ended_at = 0.0
        self.wake = asyncio.Event()
        self.ended_event = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.judged = ""  # the partial last judged a whole command or not, and the verdict
        self.silence_ms: int | None = None

    def add(self, pcm: bytes) -> None:
        self.total += len(pcm)  # also when dropped: a 30 s utterance is still ended
        if self.dropped:
            return
        self.pending += pcm
        if len(self.pending) >= BATCH_BYTES:
            self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.ended_at = time.monotonic()
        self.wake.set()
        self.ended_event.set()


class AudioPipeline:
    def __init__(
        self, *, encoding: str, sample_rate: int, sink: Sink, turns: TurnDetection = DEFAULT_TURNS
    ):
        self.decoder = Decoder(encoding=encoding, sample_rate=sample_rate)
        self.segmenter = Segmenter(turns)
        self.sink = sink
        self.utterance: _Utterance | None = None
        self._tasks: set[asyncio.Task] = set()
        self._last_report: asyncio.Task | None = None
        # What the engine keeps between this connection's utterances (speaker adaptation).
        self.recognizer_context: dict = {}
        # What the recognizer is told at the start of each utterance (the session's).
        self.language = settings.RECOGNIZER_LANGUAGE
        self.hints: tuple[str, ...] = ()

    def warm(self) -> None:
        """Start the recognizer workers now, so the first utterance meets no cold start."""
        get_pool().warm()

    def capabilities(self) -> Capabilities:
        """What the recognizer engine supports (languages, streaming, sample rates)."""
        return get_pool().capabilities

    @property
    def turns(self) -> TurnDetection:
        return self.segmenter.turns

    def set_turns(self, turns: TurnDetection) -> None:
        """The session's turn detection, from now on (also mid-utterance)."""
        self.segmenter.configure(turns)

    @property
    def encoding(self) -> str:
        return self.decoder.encoding

    @property
    def sample_rate(self) -> int:
        return self.decoder.sample_rate

    def feed(self, chunk: bytes) -> None:
        """One audio frame (the hot path). Raises FormatError or Backlogged."""
        pcm = self.decoder.decode(chunk).tobytes()
        self._segment(self.segmenter.feed(pcm))

    def _segment(self, events) -> None:
        for kind, data in events:
            if kind == "start":
                self._start(data or b"")
            elif kind == "audio" and self.utterance is not None:
                self.utterance.add(data)
                if len(self.utterance.pending) > MAX_BACKLOG_BYTES:
                    raise Backlogged()
                if self.utterance.total > MAX_UTTERANCE_BYTES:
                    self.segmenter.force_stop()
                    self._stop()
            elif kind == "pause" and self.utterance is not None:
                self.utterance.wake.set()  # decode what is pending now: a fresh partial
            elif kind == "stop":
                self._stop()

    def _start(self, preroll: bytes) -> None:
        if self.utterance is not None:
            self._stop()
        utt = _Utterance()
        utt.add(preroll)
        self.utterance = utt
        self._report(self.sink.speech_started())
        utt.task = self._spawn(self._recognize(utt))

    def _stop(self) -> None:
        utt, self.utterance = self.utterance, None
        if utt is not None:
            utt.end()
            self._report(self.sink.speech_stopped())

    def commit(self) -> bool:
        """``audio.commit``: end the utterance now. False if there was no speech to end."""
        rest = self.segmenter.force_stop()
        if self.utterance is None:
            return False
        self.utterance.add(rest)
        self._stop()
        return True

    def discard(self) -> bool:
        """Drop the utterance in progress unrecognized: its audio, its recognition, and no
        final or failure is reported (the OpenAI dialect's ``input_audio_buffer.clear``).
        False if there was none. An utterance already ended is not touched."""
        self.segmenter.force_stop()
        utt, self.utterance = self.utterance, None
        if utt is None:
            return False
        utt.dropped = True
        utt.pending.clear()
        utt.end()
        if utt.task is not None:
            utt.task.cancel()  # its recognizer goes back to the pool (``_recognize``'s finally)
        return True

    def _report(self, coro) -> asyncio.Task:
        """Run a sink call after every earlier one: events keep the order they happened in."""
        previous = self._last_report

        async def in_turn():
            try:
                if previous is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(previous)
            except asyncio.CancelledError:
                coro.close()  # never started: the socket is gone
                raise
            await coro

        self._last_report = self._spawn(in_turn())
        return self._last_report

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("pipeline_task_failed", error_type=type(task.exception()).__name__)

    async def _recognize(self, utt: _Utterance) -> None:
        """Recognize one utterance in a pooled recognizer, and always give it back.

        Waiting for a free recognizer is bounded (``RECOGNIZER_WAIT_SECONDS``: then the error
        ``recognizer_busy``). An utterance that gets no audio for ``RECOGNIZER_IDLE_SECONDS``
        is ended as if committed, so an owner that went quiet or away (a client stalled
        mid-word, a pipeline nobody closed) holds no recognizer past that.
        """
        pool = get_pool()
        try:
            recognizer = await pool.acquire(timeout=settings.RECOGNIZER_WAIT_SECONDS or None)
        except RecognizerBusy:
            logger.warning("recognizer_busy", pool_size=pool.size)
            await self._fail_when_ended(utt, "recognizer_busy")
            return
        last_partial = ""
        idle = settings.RECOGNIZER_IDLE_SECONDS or None
        failure = ""
        try:
            # The engine may decode a narrowband line differently (PocketSphinx does).
            self.recognizer_context["source_rate"] = self.sample_rate
            await recognizer.start(
                self.recognizer_context, language=self.language, hints=self.hints
            )
            while True:
                try:
                    await asyncio.wait_for(utt.wake.wait(), idle)
                except TimeoutError:
                    logger.info("utterance_idle_ended")
                    if utt is self.utterance:
                        self.segmenter.force_stop()
                        self._stop()  # as if committed: speech.stopped, then the final
                    else:
                        utt.end()
                utt.wake.clear()
                batch = bytes(utt.pending)
                utt.pending.clear()
                if batch:
                    hypothesis = await recognizer.feed(batch)
                    partial = hypothesis.text if hypothesis is not None else ""
                    if partial and partial != last_partial and not utt.ended:
                        last_partial = partial
                        await self._report(self.sink.partial(utt.id, partial))
                    self._endpoint(utt, last_partial)
                if utt.ended and not utt.pending:
                    break
            final = await recognizer.finish()
            text = final.text
            RECOGNITION_LATENCY.observe(time.monotonic() - utt.ended_at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("recognition_failed", error_type=type(exc).__name__)
            failure = "recognition_failed"
        finally:
            # The worker runs a slot's requests in order, so a slot whose utterance was
            # cancelled mid-call is safe to hand to the next utterance at once.
            pool.release(recognizer)
        if failure:
            await self._fail_when_ended(utt, failure)
            return
        if utt.total < MIN_UTTERANCE_BYTES or not text.strip():
            await self._report(self.sink.failed(utt.id, "no_speech_recognized"))
            return
        await self._report(self.sink.final(utt.id, text.strip(), confidence=final.confidence))

    def _endpoint(self, utt: _Utterance, partial: str) -> None:
        """While the speaker pauses, end the turn sooner if the partial is a whole command."""
        if utt is not self.utterance or utt.ended or not self.segmenter.paused or not partial:
            return
        if not self.turns.command_end or self.turns.manual:
            return
        if utt.judged != partial:
            utt.judged, utt.silence_ms = partial, silence_needed(partial)
        self.segmenter.end_after(utt.silence_ms)

    async def _fail_when_ended(self, utt: _Utterance, code: str) -> None:
        """Drop an utterance's audio, and say it failed once it ends (after its
        ``speech.stopped``, so that the session's status comes back to ``connected``)."""
        utt.dropped = True
        utt.pending.clear()
        with contextlib.suppress(TimeoutError):  # a 30 s utterance is ended anyway
            await asyncio.wait_for(utt.ended_event.wait(), MAX_UTTERANCE_BYTES / (TARGET_RATE * 2))
        await self._report(self.sink.failed(utt.id, code))

    async def close(self) -> None:
        """Stop recognizing (the socket is gone); utterances in flight are dropped."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["AudioPipeline", "Backlogged", "FormatError", "Sink"]
