"""The recognizer interface, and the process pool that runs recognizers off the event loop.

An engine is a class named by ``settings.RECOGNIZER_ENGINE`` (a dotted path)::

    class MyEngine:
        def __init__(self): ...                     # load models once per process
        def recognizer(self) -> Recognizer: ...     # a new decoder

    class Recognizer:                               # one utterance at a time
        def start(self, context: dict) -> None: ... # context: kept per connection, for the
                                                    # engine's speaker adaptation
        def feed(self, pcm16: bytes) -> str: ...    # 16 kHz mono PCM16; partial text so far
        def finish(self) -> str: ...                # the final text of the utterance

Engines run in ``RECOGNIZER_PROCESSES`` worker processes, not threads: PocketSphinx holds the
GIL while it decodes, so a decoding thread would stall every socket's event loop. Each worker
holds its share of ``RECOGNIZER_POOL_SIZE`` recognizers. An utterance holds one recognizer
(a slot in one worker) from its first voiced frame to its final transcript; its audio goes
there in batches of about 200 ms over a pipe: one message per batch, never per frame.
"""

import asyncio
import atexit
import contextlib
import itertools
import multiprocessing
import os
import threading
import time

import structlog
from django.conf import settings

logger = structlog.get_logger(__name__)


class RecognizerUnavailable(Exception):
    """The worker holding an utterance's recognizer died."""


class RecognizerBusy(Exception):
    """No recognizer came free within the wait allowed (``RECOGNIZER_WAIT_SECONDS``)."""


def _serve(conn, engine_path: str) -> None:
    """A recognizer worker: one engine, recognizers by slot, requests in order."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    from django.utils.module_loading import import_string

    engine = import_string(engine_path)()
    recognizers: dict[int, object] = {}
    contexts: dict[int, dict] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request_id, op, slot, arg = message
        try:
            recognizer = recognizers.get(slot)
            if recognizer is None:
                recognizer = recognizers[slot] = engine.recognizer()
            if op == "start":
                contexts[slot] = dict(arg)
                result = recognizer.start(contexts[slot])
            elif op == "feed":
                result = recognizer.feed(arg)
            else:
                result = (recognizer.finish(), contexts.pop(slot, {}))
            conn.send((request_id, True, result))
        except Exception as exc:
            conn.send((request_id, False, f"{type(exc).__name__}"))


class _Worker:
    """The parent's end of one recognizer process."""

    def __init__(self, engine_path: str, slots: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, engine_path), daemon=True, name="recognizer"
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

    def __init__(self, worker: _Worker, slot: int):
        self.worker = worker
        self.slot = slot

    async def start(self, context: dict) -> None:
        self._context = context
        await self.worker.call("start", self.slot, context)

    async def feed(self, pcm16: bytes) -> str:
        return await self.worker.call("feed", self.slot, pcm16)

    async def finish(self) -> str:
        text, context = await self.worker.call("finish", self.slot)
        self._context.update(context)
        return text


class RecognizerPool:
    def __init__(self, *, engine_path: str, size: int, processes: int):
        self.engine_path = engine_path
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

    def _take(self) -> Recognizer | None:
        with self._lock:
            candidates = [w for w in self._workers if w.alive and w.free]
            if not candidates:
                return None
            worker = max(candidates, key=lambda w: len(w.free))
            self.busy += 1
            return Recognizer(worker, worker.free.pop())

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
