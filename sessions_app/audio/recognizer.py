"""The recognizer interface, and the process pool that runs recognizers off the event loop.

An engine is a class named by ``settings.RECOGNIZER_ENGINE`` (a dotted path). It declares
what it can do in a class attribute, and makes one recognizer per pool slot::

    class MyEngine:
        capabilities = Capabilities(streaming=True, languages=("en",), sample_rates=(16000,))
        def __init__(self): ...                     # load models once per worker process
        def recognizer(self) -> "MyRecognizer": ...

    class MyRecognizer:                             # one utterance at a time per recognizer
        async def start(self, context: dict, *, language: str, hints: tuple[str, ...]): ...
        async def feed(self, pcm16: bytes) -> Hypothesis | None: ...   # a partial, or None
        async def finish(self) -> Hypothesis: ...   # the final (text "" if nothing was said)

Each method may be a coroutine (an I/O-bound engine: a network service) or a plain function
(a CPU-bound engine, such as PocketSphinx); ``feed``/``finish`` may return bare text too.
``context`` is kept per connection between its utterances (speaker adaptation: the engine
updates it in place). Audio comes as mono PCM16 at the first of the engine's
``sample_rates`` that is 16000 if it lists it, else its first (the pipeline resamples).

Engines run in ``RECOGNIZER_PROCESSES`` worker processes, not threads: PocketSphinx holds the
GIL while it decodes, so a decoding thread would stall every socket's event loop. Each worker
holds its share of ``RECOGNIZER_POOL_SIZE`` recognizers (slots) and runs an event loop: each
slot's calls run in order, and the slots of an engine whose methods are coroutines run at the
same time (many utterances in flight per worker while they wait on the network); a CPU engine's
plain methods run one at a time. An utterance holds one slot from its first voiced frame to its
final transcript; its audio goes there in batches of about 200 ms over a pipe: one message per
batch, never per frame.
"""

import asyncio
import atexit
import contextlib
import faulthandler
import inspect
import itertools
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import soxr
import structlog
from django.conf import settings
from django.utils.module_loading import import_string

from sessions_app.audio.formats import TARGET_RATE

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What an engine supports (a class attribute ``capabilities`` of the engine)."""

    streaming: bool = False  # partials while speech goes on; the live pass's final is the final
    languages: tuple[str, ...] = ("en",)  # language tags it recognizes ("en" covers "en-US")
    sample_rates: tuple[int, ...] = (TARGET_RATE,)  # the rates it takes
    word_timings: bool = False  # whether its finals carry word timings

    def supports(self, language: str) -> bool:
        tag = language.lower()
        return any(tag == lang or tag.startswith(lang + "-") for lang in self.languages)

    @property
    def sample_rate(self) -> int:
        return TARGET_RATE if TARGET_RATE in self.sample_rates else self.sample_rates[0]


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the utterance's audio
    end: float
    confidence: float | None = None  # 0..1 where the engine has it


@dataclass(frozen=True)
class Hypothesis:
    """A partial or final transcript of one utterance."""

    text: str
    confidence: float | None = None  # 0..1 where the engine has it
    words: tuple[Word, ...] = field(default_factory=tuple)


def as_hypothesis(value) -> Hypothesis | None:
    if value is None or isinstance(value, Hypothesis):
        return value
    return Hypothesis(text=str(value))


def engine_capabilities(engine_path: str) -> Capabilities:
    """An engine's declared capabilities, read from its class (nothing is loaded)."""
    declared = getattr(import_string(engine_path), "capabilities", None)
    if callable(declared):  # a static method, when they depend on settings (the model)
        declared = declared()
    return declared or Capabilities()


class TranscriptionError(ValueError):
    """A language the engine does not support, or hints it cannot take; ``str()`` says why."""


MAX_HINTS = 100
MAX_HINT_CHARS = 100


def check_transcription(
    capabilities: Capabilities, language: str, hints
) -> tuple[str, tuple[str, ...]]:
    """A session's language and phrase hints, checked against what the engine supports."""
    if not isinstance(language, str) or not 2 <= len(language) <= 35:
        raise TranscriptionError("language must be a language tag such as en-US")
    if not capabilities.supports(language):
        supported = ", ".join(capabilities.languages)
        raise TranscriptionError(f"The recognizer does not support {language}; it has {supported}")
    if not isinstance(hints, list | tuple) or len(hints) > MAX_HINTS:
        raise TranscriptionError(f"hints must be a list of at most {MAX_HINTS} phrases")
    if not all(isinstance(h, str) and 0 < len(h.strip()) <= MAX_HINT_CHARS for h in hints):
        raise TranscriptionError(f"each hint must be 1 to {MAX_HINT_CHARS} characters")
    return language, tuple(h.strip() for h in hints)


class RecognizerUnavailable(Exception):
    """The worker holding an utterance's recognizer died."""


class RecognizerBusy(Exception):
    """No recognizer came free within the wait allowed (``RECOGNIZER_WAIT_SECONDS``)."""


async def _call(method, *args, **kwargs):
    result = method(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _serve(conn, engine_path: str, first_slot: int | None = None) -> None:
    """A recognizer worker: one engine, recognizers by slot, each slot's requests in order."""
    # Nothing a worker loads may come from the network (models ship in packages).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # An engine that crashes in native code (a segfault) leaves its Python stack in the
    # server's log, not a bare "recognizer_worker_died" (stacks name code, never audio).
    faulthandler.enable()
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    engine = import_string(engine_path)()
    # The slot the pool hands out first gets its recognizer now, before the worker answers,
    # so that the first utterance does not also wait for one to load; the others load in the
    # background once it serves (``_serve_slots``).
    ready = {} if first_slot is None else {first_slot: engine.recognizer()}
    asyncio.run(_serve_slots(conn, engine, ready, preload=first_slot))


class _Slot:
    """One pool slot in a worker: its recognizer, and the context of the utterance it holds."""

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.context: dict = {}

    async def run(self, op: str, arg):
        recognizer = self.recognizer
        if op == "start":
            self.context = dict(arg["context"])
            return await _call(
                recognizer.start, self.context, language=arg["language"], hints=arg["hints"]
            )
        if op == "feed":
            return as_hypothesis(await _call(recognizer.feed, arg))
        final = as_hypothesis(await _call(recognizer.finish)) or Hypothesis("")
        result, self.context = (final, self.context), {}
        return result


async def _serve_slots(conn, engine, ready: dict | None = None, preload: int | None = None) -> None:
    """Serve slots' requests, each slot's in order.

    A CPU-bound engine (plain methods) decodes one request at a time, and an utterance that
    has ended goes first: its last audio and its final before other utterances' audio, so the
    final of a turn that just ended does not wait behind every other speaker's next batch. An
    I/O-bound engine (coroutines) runs its slots at the same time. With ``preload``, the
    recognizers of slots ``preload``-1 down to 0 (the order the pool hands them out) load
    between requests, one at a time.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def read() -> None:  # a thread: the pipe's recv blocks
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message is None:
                return

    threading.Thread(target=read, daemon=True, name="recognizer-inbox").start()
    ready = ready if ready is not None else {}
    slots: dict[int, _Slot] = {}
    to_load = list(range((preload or 0) - 1, -1, -1))

    def slot_for(number: int) -> _Slot:
        if number not in slots:
            slots[number] = _Slot(ready.pop(number, None) or engine.recognizer())
        return slots[number]

    def load_one() -> bool:
        """Load the next slot's recognizer not made yet; False when none is left to load."""
        while to_load:
            number = to_load.pop(0)
            if number not in ready and number not in slots:
                ready[number] = engine.recognizer()
                return True
        return False

    async def answer(number: int, request_id: int, op: str, arg) -> None:
        try:  # an engine that fails to make a recognizer fails this request, not the worker
            conn.send((request_id, True, await slot_for(number).run(op, arg)))
        except Exception as exc:
            conn.send((request_id, False, f"{type(exc).__name__}"))

    probe = slot_for(next(iter(ready))).recognizer if ready else None
    if probe is not None and any(
        inspect.iscoroutinefunction(getattr(probe, name, None)) for name in ("feed", "finish")
    ):
        await _serve_concurrently(inbox, answer, load_one)
    else:
        await _serve_in_turn(inbox, answer, load_one)


async def _serve_in_turn(inbox: asyncio.Queue, answer, load_one) -> None:
    """One request at a time, in the order :func:`_turn` gives."""
    pending: dict[int, list] = {}  # slot -> [(seq, request_id, op, arg)], in order
    seq = itertools.count()
    while True:
        if pending:
            await asyncio.sleep(0)  # let answers out and the reader's messages in
            messages = []
        else:
            if inbox.empty():
                load_one()  # idle: load a recognizer that a later utterance will use
            messages = [await inbox.get()]
        while not inbox.empty():
            messages.append(inbox.get_nowait())
        for message in messages:
            if message is None:
                return
            request_id, op, number, arg = message
            pending.setdefault(number, []).append((next(seq), request_id, op, arg))
        if not pending:
            continue
        number = min(pending, key=lambda n: _turn(pending[n]))
        _, request_id, op, arg = pending[number].pop(0)
        if not pending[number]:
            del pending[number]
        await answer(number, request_id, op, arg)


def _turn(requests: list) -> tuple[int, int]:
    """A slot's place in line: slots with a ``finish`` waiting first, the one whose finish
    came first; then the others, the oldest request first."""
    finish = next((seq for seq, _, op, _ in requests if op == "finish"), None)
    return (0, finish) if finish is not None else (1, requests[0][0])


async def _serve_concurrently(inbox: asyncio.Queue, answer, load_one) -> None:
    """Each slot's requests in order in a task of its own: many utterances in flight."""
    loop = asyncio.get_running_loop()
    queues: dict[int, asyncio.Queue] = {}
    tasks: set[asyncio.Task] = set()

    async def run_slot(number: int, queue: asyncio.Queue) -> None:
        while True:
            request_id, op, arg = await queue.get()
            await answer(number, request_id, op, arg)

    async def load_rest() -> None:
        await asyncio.sleep(0)  # requests first: a load blocks this loop while it runs
        while load_one():
            await asyncio.sleep(0)

    tasks.add(loop.create_task(load_rest()))
    while True:
        message = await inbox.get()
        if message is None:
            break
        request_id, op, number, arg = message
        queue = queues.get(number)
        if queue is None:
            queue = queues[number] = asyncio.Queue()
            tasks.add(loop.create_task(run_slot(number, queue)))
        queue.put_nowait((request_id, op, arg))
    for task in tasks:
        task.cancel()


class _Worker:
    """The parent's end of one recognizer process."""

    def __init__(self, engine_path: str, slots: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, engine_path, slots - 1), daemon=True, name="recognizer"
        )
        self.process.start()
        child.close()
        # After multiprocessing's own exit hook (which kills daemon children), so it runs first.
        atexit.register(self.stop)
        self.free = list(range(slots))
        self.slots = slots
        self._ids = itertools.count()
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._send_lock = threading.Lock()
        self.alive = True
        self.stopping = False
        threading.Thread(target=self._read, daemon=True, name="recognizer-reader").start()

    def _read(self) -> None:
        while True:
            try:
                request_id, ok, value = self.conn.recv()
            except (EOFError, OSError):
                break
            loop, future = self._pending.pop(request_id, (None, None))
            if loop is not None:
                _resolve_soon(loop, future, ok, value)
        self.alive = False
        if not self.stopping:
            logger.warning("recognizer_worker_died")
        for loop, future in list(self._pending.values()):
            _resolve_soon(loop, future, False, "worker died")
        self._pending.clear()

    async def call(self, op: str, slot: int, arg=None):
        if not self.alive:
            raise RecognizerUnavailable("worker died")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request_id = next(self._ids)
        self._pending[request_id] = (loop, future)
        try:
            with self._send_lock:
                self.conn.send((request_id, op, slot, arg))
            return await future
        finally:
            # A caller cancelled mid-call (its socket went away) leaves nothing behind; the
            # worker still answers, in order, and the answer is dropped.
            self._pending.pop(request_id, None)

    def stop(self) -> None:
        self.stopping = True
        self.alive = False
        try:
            with self._send_lock:
                self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()


def _resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future, ok: bool, value):
    """Hand an answer to the caller's loop; a loop that has closed meanwhile gets none."""
    with contextlib.suppress(RuntimeError):  # closed: nobody waits for this answer any more
        loop.call_soon_threadsafe(_resolve, future, ok, value)


def _resolve(future: asyncio.Future, ok: bool, value) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(RecognizerUnavailable(str(value)))


class Recognizer:
    """One utterance's recognizer: a slot in a worker process, used through async calls."""

    def __init__(self, worker: _Worker, slot: int, capabilities: Capabilities):
        self.worker = worker
        self.slot = slot
        self.capabilities = capabilities
        self._resampler = None
        self._context: dict = {}

    async def start(
        self, context: dict, *, language: str = "en-US", hints: tuple[str, ...] = ()
    ) -> None:
        self._context = context
        rate = self.capabilities.sample_rate
        self._resampler = (
            None
            if rate == TARGET_RATE
            else soxr.ResampleStream(TARGET_RATE, rate, 1, dtype="int16", quality="HQ")
        )
        arg = {"context": context, "language": language, "hints": tuple(hints)}
        await self.worker.call("start", self.slot, arg)

    async def feed(self, pcm16: bytes) -> Hypothesis | None:
        """16 kHz PCM16 (a batch); the partial hypothesis so far, if the engine streams."""
        if self._resampler is not None:
            samples = np.frombuffer(pcm16, dtype="<i2")
            pcm16 = self._resampler.resample_chunk(samples).tobytes()
        return await self.worker.call("feed", self.slot, pcm16)

    async def finish(self) -> Hypothesis:
        if self._resampler is not None:
            rest = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if len(rest):
                await self.worker.call("feed", self.slot, rest.tobytes())
        final, context = await self.worker.call("finish", self.slot)
        self._context.update(context)
        return final


class RecognizerPool:
    def __init__(self, *, engine_path: str, size: int, processes: int):
        self.engine_path = engine_path
        self.capabilities = engine_capabilities(engine_path)
        self.processes = max(1, processes)
        self.size = max(self.processes, size)
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.busy = 0

    def _ensure_workers(self) -> None:
        with self._lock:
            # A dead worker stays listed until its checked-out slots come back.
            self._workers = [w for w in self._workers if w.alive or len(w.free) < w.slots]
            while len([w for w in self._workers if w.alive]) < self.processes:
                slots = self.size // self.processes
                self._workers.append(_Worker(self.engine_path, slots))

    def warm(self) -> None:
        """Start the worker processes now (each loads its engine and its first recognizer),
        so that a connection's first utterance does not wait for a cold start."""
        self._ensure_workers()

    def _take(self) -> Recognizer | None:
        with self._lock:
            candidates = [w for w in self._workers if w.alive and w.free]
            if not candidates:
                return None
            worker = max(candidates, key=lambda w: len(w.free))
            self.busy += 1
            return Recognizer(worker, worker.free.pop(), self.capabilities)

    async def acquire(self, timeout: float | None = None) -> Recognizer:
        """A recognizer for one utterance; waits (without blocking the loop) when all are busy.

        Raises :class:`RecognizerBusy` when none came free within ``timeout`` seconds
        (None: wait as long as it takes).
        """
        self._ensure_workers()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            recognizer = self._take()
            if recognizer is not None:
                return recognizer
            if deadline is not None and time.monotonic() >= deadline:
                raise RecognizerBusy()
            await asyncio.sleep(0.02)
            self._ensure_workers()

    def release(self, recognizer: Recognizer) -> None:
        with self._lock:
            self.busy -= 1
            recognizer.worker.free.append(recognizer.slot)

    def alive_processes(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.alive)

    def stop(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.stop()
            self._workers = []


_pool: RecognizerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> RecognizerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = RecognizerPool(
                engine_path=settings.RECOGNIZER_ENGINE,
                size=settings.RECOGNIZER_POOL_SIZE,
                processes=settings.RECOGNIZER_PROCESSES,
            )
        return _pool
